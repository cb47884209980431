"""The gateway's shared round trips (:mod:`actors.gateway.coalesce`): the requests of one
turn of the event loop share one Redis call for their rate-limit counts and their session
records, and each still gets exactly the answer a call of its own would have given."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from actors.gateway.auth import SigningKeys
from actors.gateway.coalesce import Coalescer
from actors.gateway.context import GatewayContext
from events import RedisEventStore
from kernelhub.signing import sign, sign_with_key

unit, redis = pytest.mark.unit, pytest.mark.redis


class Recorder:
    """A ``run`` function that records each call's items."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[list[int]] = []
        self.fail = fail

    async def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return [item * 10 for item in items]


@unit
async def test_the_callers_of_one_loop_turn_share_one_call_and_get_their_own_answers() -> None:
    run = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(run)
    assert await asyncio.gather(*(coalescer(n) for n in [3, 1, 3, 2])) == [30, 10, 30, 20]
    assert run.calls == [[3, 1, 3, 2]]  # in the order asked, a repeat asked again
    assert await coalescer(7) == 70  # a lone caller: a call of its own
    assert run.calls[-1] == [7]


@unit
async def test_a_batch_is_split_past_its_bound() -> None:
    run = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=2)
    assert await asyncio.gather(*(coalescer(n) for n in range(5))) == [0, 10, 20, 30, 40]
    assert sorted(run.calls) == [[0, 1], [2, 3], [4]]


@unit
async def test_a_failed_call_fails_each_of_its_callers_with_the_same_error() -> None:
    error = ConnectionError("redis is away")
    coalescer: Coalescer[int, int] = Coalescer(Recorder(fail=error))
    results = await asyncio.gather(coalescer(1), coalescer(2), return_exceptions=True)
    assert list(results) == [error, error]


@unit
async def test_a_caller_cancelled_before_the_call_is_left_out_of_it() -> None:
    run = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(run)
    gone = asyncio.ensure_future(coalescer(1))
    kept = asyncio.ensure_future(coalescer(2))
    await asyncio.sleep(0)  # both are waiting; the call is made on the next turn
    gone.cancel()
    assert await kept == 20
    assert run.calls == [[2]]


@unit
async def test_an_answer_of_the_wrong_length_is_an_error_not_a_wrong_answer() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    coalescer: Coalescer[int, int] = Coalescer(short)
    with pytest.raises(RuntimeError, match="1 answers to 2 calls"):
        await asyncio.gather(coalescer(1), coalescer(2))


@unit
def test_a_kept_signing_key_signs_as_the_client_does() -> None:
    keys = SigningKeys(max_keys=2)
    text = "GET\n/session/x\n..."
    for date in [
        datetime(2026, 12, 3, 23, 59, tzinfo=UTC),
        datetime(2026, 12, 4, 0, 1, tzinfo=UTC),  # the next day: another key
        datetime(2026, 12, 4, 0, 1, tzinfo=timezone(timedelta(hours=-5))),  # its own zone's day
    ]:
        for host in ["127.0.0.1:8081", "localhost:8081"]:
            for hash_type in ["sha256", "sha1", "md5"]:
                key = keys.key("secret", date, host, hash_type)
                assert sign_with_key(key, text, hash_type) == sign(
                    "secret", date, host, text, hash_type
                )
                assert len(keys) <= 2  # bounded whatever hosts callers send
    other = keys.key("other secret", date, "h", "sha256")
    assert sign_with_key(other, text) != sign("secret", date, "h", text)


@redis
async def test_requests_counted_together_count_as_one_by_one(store: RedisEventStore) -> None:
    counter = store.rate_limits
    assert await counter.hits([], 900) == []
    assert await counter.hits(["A", "B", "A", "A"], 900) == [1, 1, 2, 3]
    assert await counter.hit("A", 900) == 4
    assert await counter.hits(["B", "C"], 900) == [2, 1]
    assert await store.redis.zcard("kh:ratelimit:A") == 4
    assert await store.redis.get("kh:ratelimit:seq") == b"7"  # each request its own member
    assert 0 < await store.redis.ttl("kh:ratelimit:A") <= 900


class Models:
    """The read model's ``sessions_by_id`` as the store answers it: records in the order
    asked, unknown ids left out, each record decoded anew."""

    def __init__(self, records: dict[str, dict[str, Any]]) -> None:
        self.records = records
        self.calls: list[list[str]] = []

    async def sessions_by_id(self, ids: list[str]) -> list[dict[str, Any]]:
        self.calls.append(list(ids))
        return [dict(self.records[i]) for i in ids if i in self.records]

    async def sessions_named(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
        return []  # no session is named like an id here


@unit
async def test_session_lookups_of_one_turn_are_read_together_each_with_its_own_record() -> None:
    a, b, unknown = (f"00000000-0000-0000-0000-00000000000{n}" for n in (1, 2, 3))
    models = Models(
        {
            a: {"id": a, "access_key": "AK", "status": "RUNNING"},
            b: {"id": b, "access_key": "AK", "status": "RUNNING"},
        }
    )
    ctx = GatewayContext(
        store=None,  # type: ignore[arg-type]
        router=None,  # type: ignore[arg-type]
        auth=None,  # type: ignore[arg-type]
        models=models,  # type: ignore[arg-type]
        lookups=None,  # type: ignore[arg-type]
        rate_limiter=None,  # type: ignore[arg-type]
        idle=None,  # type: ignore[arg-type]
    )
    found = await asyncio.gather(*(ctx.resolve("AK", ref) for ref in [a, unknown, b, a]))
    assert models.calls == [[a, unknown, b, a]]
    assert [[r["id"] for r in f] for f in found] == [[a], [], [b], [a]]
    assert found[0][0] is not found[3][0]  # no two requests share one record
    assert await ctx.resolve("AK2", a) == []  # another keypair's session: not found
