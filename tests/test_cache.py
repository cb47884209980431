"""The refreshing cache of hot-path lookups: one load per key however many ask at once, a
stale entry answered at once while it reloads behind, a failed reload keeping the old."""

from __future__ import annotations

import asyncio

import pytest

from actors.tenancy.cache import RefreshingCache

pytestmark = pytest.mark.unit


class Source:
    def __init__(self) -> None:
        self.loads = 0
        self.value = "v1"
        self.fail = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def load(self, key: str) -> str:
        self.loads += 1
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("redis away")
        return f"{key}={self.value}"


async def test_thirty_two_callers_at_once_cause_one_load() -> None:
    source = Source()
    source.gate.clear()
    cache: RefreshingCache[str, str] = RefreshingCache(source.load, ttl_s=60)
    waiting = [asyncio.create_task(cache.get("k")) for _ in range(32)]
    await asyncio.sleep(0.01)
    source.gate.set()
    assert set(await asyncio.gather(*waiting)) == {"k=v1"}
    assert source.loads == 1


async def test_a_stale_entry_is_answered_at_once_and_refreshed_behind() -> None:
    source = Source()
    cache: RefreshingCache[str, str] = RefreshingCache(source.load, ttl_s=0.05)
    assert await cache.get("k") == "k=v1"
    source.value = "v2"
    await asyncio.sleep(0.06)
    source.gate.clear()  # the reload hangs: the answer must not wait for it
    assert await asyncio.wait_for(cache.get("k"), 0.5) == "k=v1"
    assert await asyncio.wait_for(cache.get("k"), 0.5) == "k=v1"  # still one reload
    assert source.loads == 2
    source.gate.set()
    await asyncio.sleep(0.01)
    assert await cache.get("k") == "k=v2"


async def test_a_failed_reload_keeps_the_old_value_and_a_first_failure_raises() -> None:
    source = Source()
    cache: RefreshingCache[str, str] = RefreshingCache(source.load, ttl_s=0.01)
    assert await cache.get("k") == "k=v1"
    source.fail = True
    await asyncio.sleep(0.02)
    assert await cache.get("k") == "k=v1"
    await asyncio.sleep(0.01)
    assert await cache.get("k") == "k=v1"
    with pytest.raises(ConnectionError):
        await cache.get("other")
