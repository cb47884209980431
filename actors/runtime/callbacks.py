"""Session callbacks delivered: a follower of the log that POSTs each status change of a
session created with a ``callback_url`` (the decisions are :mod:`actors.domain.callbacks`;
docs/callbacks.md for operators).

- **From the log, never in the way.** The follower reads the session events after its own
  checkpoint (``store.followers``, as every follower); the shards and the gateway never wait
  on it, and a receiver never waits on another: each destination (``scheme://host:port``)
  has its own bounded queue and worker, which delivers in log order (a session's changes
  arrive in the order they happened) and keeps its own retries.
- **At least once.** The checkpoint only passes an event once its delivery is done
  (delivered, or dropped after its attempts), so a follower killed mid-way resumes before
  what it still owed and sends it again, with the same body and the same
  ``Idempotency-Key`` (the event's id): a receiver drops repeats by that key.
- **Bounded, and fair.** A queue past ``policy.queue_bound`` drops (and counts) what does
  not fit; each attempt is bounded in time and in what it reads back; attempts are bounded
  in number. Destinations with deliveries in flight are bounded per owner (access key) and
  overall (``policy.max_destinations_per_owner``, ``policy.max_destinations``): a delivery
  to a new destination past either is dropped, counted and logged, so one tenant's slow
  receivers fill its own share only. Each destination's worker holds at most one
  connection, and the pool has a place for every live destination (at most two per host),
  so an attempt never waits for another receiver's connection: its time is its own.
- **No SSRF.** The URL is checked again before each attempt, its host judged in the form
  aiohttp connects to (``connect_host``), and a name's addresses filtered where the
  connection is made (:class:`GuardedResolver`: aiohttp connects only to what the resolver
  returns, so a name cannot resolve to a public address for a check and to a private one
  for the connection). Below both, every socket is made by :func:`guarded_socket`, which
  judges the very address it is about to connect to, whether a resolver was asked or not
  (aiohttp skips the resolver for an address literal). Redirects are not followed, proxies
  from the environment not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections import Counter, OrderedDict, deque
from collections.abc import Callable

import aiohttp
import structlog
from aiohappyeyeballs import AddrInfoType, SocketFactoryType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from actors.domain.callbacks import (
    CALLBACK_EVENTS,
    DEFAULT_POLICY,
    CallbackPolicy,
    Delivery,
    Outcome,
    Progress,
    address_refusal,
    callback_body,
    destination_of,
    judge,
    validate_callback_url,
)
from actors.domain.errors import InvalidAPIParameters
from events import Event, RedisEventStore, Subscription

__all__ = [
    "FOLLOWER_NAME",
    "AddressRefused",
    "CallbackDispatcher",
    "GuardedResolver",
    "callback_client",
    "guarded_socket",
]

log = structlog.get_logger(__name__)

FOLLOWER_NAME = "callbacks"
_INTERESTS = frozenset(CALLBACK_EVENTS)
_ENDED = frozenset({"session_terminated", "session_cancelled"})
_URL_CACHE = 10_000
_USER_AGENT = "kernelhub-callbacks"
_STOP_S = 5.0


class AddressRefused(OSError):
    """Every address a callback's host resolved to is one callbacks may not reach."""


class GuardedResolver(AbstractResolver):
    """The system resolver, keeping only the addresses the policy lets callbacks reach.

    aiohttp connects to exactly the addresses its resolver returns, so this is the check at
    connect time: no second resolution an attacker's DNS could answer differently."""

    def __init__(self, policy: CallbackPolicy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        refusals = [address_refusal(r["host"], self._policy) for r in results]
        kept = [r for r, why in zip(results, refusals, strict=True) if why is None]
        if not kept:
            reasons = ", ".join(sorted({why or "" for why in refusals}))
            raise AddressRefused(f"{host} resolves only to what callbacks may not reach: {reasons}")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket(policy: CallbackPolicy) -> SocketFactoryType:
    """aiohttp's ``socket_factory``: makes the socket for one address it is about to connect
    to, after judging that address (raises :class:`AddressRefused`, which aiohttp reports as
    a ``ClientConnectorError`` carrying it). The last check, independent of how the address
    was found: a literal host never reaches the resolver."""

    def make(addr_info: AddrInfoType) -> socket.socket:
        family, kind, proto, _, address = addr_info
        host = str(address[0])
        try:
            why = address_refusal(host, policy)
        except ValueError:
            why = "not an IP address"
        if why is not None:
            raise AddressRefused(f"{host} is {why}, which callbacks may not reach")
        return socket.socket(family=family, type=kind, proto=proto)

    return make


def callback_client(policy: CallbackPolicy) -> aiohttp.ClientSession:
    """The HTTP client callbacks are sent with: addresses judged by the resolver and again
    by the socket factory; no DNS cache (each attempt resolves afresh, judged), no kept
    connections, no proxies from the environment; a pool with a place for every destination
    the policy lets be live (at most one connection each, two per host for spellings that
    meet), so no attempt waits on another receiver's connection."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            resolver=GuardedResolver(policy),
            socket_factory=guarded_socket(policy),
            use_dns_cache=False,
            force_close=True,
            limit=policy.max_destinations + 1,
            limit_per_host=2,
        ),
        trust_env=False,
        headers={"User-Agent": _USER_AGENT},
    )


class CallbackDispatcher:
    """Follows the log from its checkpoint and delivers callbacks (see the module)."""

    def __init__(
        self,
        store: RedisEventStore,
        policy: CallbackPolicy = DEFAULT_POLICY,
        *,
        name: str = FOLLOWER_NAME,
        on_outcome: Callable[[str], None] | None = None,
        block_ms: int = 200,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.policy = policy
        self.name = name
        self.on_outcome = on_outcome
        """Told ``delivered``, ``failed`` (an attempt to be retried) or ``dropped``."""
        self.block_ms = block_ms
        self._jitter = jitter
        self.progress = Progress()
        self._urls: OrderedDict[str, tuple[str | None, str]] = OrderedDict()
        """Session id -> its callback URL (``None``: none) and owner (access key), as its
        ``session_enqueued`` says."""
        self._queues: dict[str, deque[Delivery]] = {}
        self._owner_of: dict[str, str] = {}
        """Live destination -> the owner whose delivery opened it (its share is counted)."""
        self._live: Counter[str] = Counter()
        """Owner -> how many live destinations it opened."""
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty = asyncio.Event()
        self._saved: str | None = None
        self._http: aiohttp.ClientSession | None = None

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> CallbackDispatcher:
        after = await self.store.followers.get(self.name)
        if after is None:
            after = await self.store.head()
            await self.store.followers.set(self.name, after)
        self.progress = Progress(after)
        self._saved = after
        self.connect()
        self._subscription = self.store.subscribe(after, block_ms=self.block_ms, types=_INTERESTS)
        self._tasks = [
            asyncio.create_task(self._follow(), name="callbacks-follow"),
            asyncio.create_task(self._flush(), name="callbacks-checkpoint"),
        ]
        return self

    def connect(self) -> None:
        """Make the HTTP client (``start`` does; a test delivering by hand calls it)."""
        if self._http is None:
            self._http = callback_client(self.policy)

    async def stop(self) -> None:
        """Stop following and delivering; the checkpoint keeps what is still owed."""
        if self._subscription is not None:
            await self._subscription.aclose()
        tasks = [*self._tasks, *self._workers.values()]
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: stopping never waits on a receiver (or on a stuck client)
            await asyncio.wait(tasks, timeout=_STOP_S)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._save(), _STOP_S)
        if self._http is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http.close(), _STOP_S)

    @property
    def pending(self) -> int:
        """Deliveries read from the log and not yet done."""
        return self.progress.owed

    # ---- following the log ---------------------------------------------------------------------
    async def _follow(self) -> None:
        subscription = self._subscription
        assert subscription is not None
        async for event in subscription:
            for each in (event, *subscription.take_buffered()):
                try:
                    await self._read(each)
                except Exception:  # one bad event must not stop every other callback
                    log.exception("callback not queued", position=each.position)
                    self.progress.read(each.position, 0)
            self._dirty.set()

    async def _read(self, event: Event) -> None:
        session_id = str(getattr(event.data, "session_id", ""))
        url, owner = await self._url_of(session_id, event)
        if event.type in _ENDED:
            self._urls.pop(session_id, None)
        if url is None:
            self.progress.read(event.position, 0)
            return
        delivery = Delivery(
            event_id=str(event.event_id),
            position=event.position,
            session_id=session_id,
            url=url,
            body=callback_body(event.type, session_id, event.position_ms),
        )
        self.enqueue(delivery, owner)

    def enqueue(self, delivery: Delivery, owner: str) -> bool:
        """Queue ``delivery`` (read from the log at its position) for its destination, or
        drop it (counted, logged, owed no more) when that queue is full, or when it would
        open a destination past the owner's share or past the overall bound. ``False``:
        dropped."""
        destination = destination_of(delivery.url)
        queue = self._queues.get(destination)
        why = ""
        if queue is None:
            if len(self._queues) >= self.policy.max_destinations:
                why = "too many destinations have callbacks in flight"
            elif self._live[owner] >= self.policy.max_destinations_per_owner:
                why = "its owner has too many destinations with callbacks in flight"
        elif len(queue) >= self.policy.queue_bound:
            why = "its destination's queue is full"
        if why:
            self.progress.read(delivery.position, 0)
            self._told("dropped")
            log.warning(
                f"callback dropped: {why}",
                session=delivery.session_id,
                callback=delivery.body.get("event"),
                owner=owner,
                destination=destination,
                queue_bound=self.policy.queue_bound,
                max_destinations=self.policy.max_destinations,
                max_destinations_per_owner=self.policy.max_destinations_per_owner,
            )
            return False
        if queue is None:
            queue = self._queues[destination] = deque()
            self._owner_of[destination] = owner
            self._live[owner] += 1
        self.progress.read(delivery.position, 1)
        queue.append(delivery)
        if destination not in self._workers:
            self._workers[destination] = asyncio.create_task(
                self._work(destination), name=f"callbacks:{destination}"
            )
        return True

    async def _url_of(self, session_id: str, event: Event) -> tuple[str | None, str]:
        """The session's callback URL (``None``: none) and its owner's access key."""
        if event.type == "session_enqueued":
            spec = getattr(event.data, "spec", None)
        elif session_id in self._urls:
            self._urls.move_to_end(session_id)
            return self._urls[session_id]
        else:  # enqueued before this follower's memory (a restart): its stream says
            first = await self.store.read_stream(event.stream, 1, 1)
            spec = getattr(first[0].data, "spec", None) if first else None
        url: str | None = getattr(spec, "callback_url", None)
        known = (url, str(getattr(spec, "access_key", "") or ""))
        self._urls[session_id] = known
        while len(self._urls) > _URL_CACHE:
            self._urls.popitem(last=False)
        return known

    # ---- delivering ----------------------------------------------------------------------------
    async def _work(self, destination: str) -> None:
        """Deliver one destination's queue in order, each delivery to its end."""
        queue = self._queues[destination]
        try:
            while queue:
                delivery = queue[0]
                attempt = 0
                while True:
                    attempt += 1
                    try:
                        outcome = await self._attempt(delivery, attempt)
                    except Exception as exc:  # a bug of ours: counted as a failed attempt
                        log.exception("callback attempt raised", destination=destination)
                        outcome = judge(None, repr(exc), attempt, self.policy, self._jitter())
                    if outcome.kind != "retry":
                        break
                    self._told("failed")
                    log.info(
                        "callback attempt failed; retrying",
                        session=delivery.session_id,
                        callback=delivery.body["event"],
                        destination=destination,
                        attempt=attempt,
                        why=outcome.why,
                        retry_in_s=round(outcome.delay_s, 3),
                    )
                    await asyncio.sleep(outcome.delay_s)
                queue.popleft()
                self.progress.done(delivery.position)
                self._dirty.set()
                self._told("delivered" if outcome.kind == "delivered" else "dropped")
                (log.info if outcome.kind == "delivered" else log.warning)(
                    "callback delivered" if outcome.kind == "delivered" else "callback dropped",
                    session=delivery.session_id,
                    callback=delivery.body["event"],
                    destination=destination,
                    attempts=attempt,
                    why=outcome.why,
                )
        finally:
            if not queue:
                self._queues.pop(destination, None)
                owner = self._owner_of.pop(destination, None)
                if owner is not None:
                    self._live[owner] -= 1
                    if self._live[owner] <= 0:
                        del self._live[owner]
            self._workers.pop(destination, None)

    async def _attempt(self, delivery: Delivery, attempt: int) -> Outcome:
        policy, jitter = self.policy, self._jitter()
        try:
            validate_callback_url(delivery.url, policy)  # a literal address judged here
        except InvalidAPIParameters as exc:
            return judge(None, exc.msg, attempt, policy, jitter, refused=True)
        assert self._http is not None
        status: int | None = None
        try:
            async with self._http.post(
                delivery.url,
                json=dict(delivery.body),
                headers={"Idempotency-Key": delivery.event_id},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=policy.timeout_s, sock_connect=policy.connect_timeout_s
                ),
            ) as response:
                status = response.status
                await response.content.read(policy.max_response_bytes)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                return judge(None, str(exc.os_error), attempt, policy, jitter, refused=True)
            return judge(None, _described(exc), attempt, policy, jitter)
        except ValueError as exc:  # a URL aiohttp cannot use: no attempt will do better
            return judge(None, _described(exc), attempt, policy, jitter, refused=True)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if status is None:  # after the status line, the answer is the status
                return judge(None, _described(exc), attempt, policy, jitter)
        return judge(status, None, attempt, policy, jitter)

    def _told(self, outcome: str) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    # ---- the checkpoint ------------------------------------------------------------------------
    async def _flush(self) -> None:
        """The one writer of the checkpoint (so an older value never lands after a newer)."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._save()
            except Exception as exc:  # Redis away: the next change tries again
                log.warning("callback checkpoint not saved", error=repr(exc))
                await asyncio.sleep(0.5)
                self._dirty.set()

    async def _save(self) -> None:
        checkpoint = self.progress.checkpoint
        if checkpoint is not None and checkpoint != self._saved:
            await self.store.followers.set(self.name, checkpoint)
            self._saved = checkpoint


def _described(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
