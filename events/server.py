"""The Redis server as such, for those who start it or report on it (not the log: see the
store): whether it answers, and the one exception type its client raises.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from .envelope import Position, position_key

__all__ = [
    "SERVER_GONE",
    "ServerError",
    "ServerMark",
    "log_unreachable",
    "needs_reload",
    "server_pid",
    "server_probe",
]

ServerError = redis.exceptions.RedisError
"""What the Redis client raises when the server refuses or cannot be reached."""
SERVER_GONE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
"""What the client raises while the server is away (waited out by whoever follows the log).
``BusyLoadingError`` (a restarted server still reading its AOF) is a ``ConnectionError``."""

_CHAIN_DEPTH = 8


def log_unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the log cannot be reached right now (Redis down, restarting,
    loading its AOF, stopped so that commands time out): an outage to wait out and answer
    "try again", never a bug to report with a traceback.

    The one place that decides it, for the gateway's 503 and every actor's loops. It looks
    through what wraps the client's error: Ray's ``RayTaskError`` (an actor that failed on
    Redis answers its caller with it; ``cause`` holds the original) and explicit chains
    (``raise ... from``), a few links deep."""
    seen: BaseException | None = error
    for _ in range(_CHAIN_DEPTH):
        if seen is None:
            return False
        if isinstance(seen, SERVER_GONE):
            return True
        cause = getattr(seen, "cause", None)  # ray.exceptions.RayTaskError
        if isinstance(cause, BaseException) and cause is not seen:
            seen = cause
        else:
            seen = seen.__cause__  # explicit only: an error raised while handling one is its own
    return False


def server_probe(
    url: str, timeout: float = 1.0, connect_timeout: float | None = None
) -> str | None:
    """``None`` when the Redis at ``url`` answers a PING, else why not ("still loading its
    AOF", or the connection's error); another refusal raises :data:`ServerError`."""
    client = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=connect_timeout
    )
    try:
        return None if client.ping() else "no answer"
    except redis.exceptions.BusyLoadingError:
        return "still loading its AOF"
    except (redis.exceptions.ConnectionError, OSError) as exc:
        return str(exc)
    finally:
        client.close()


def server_pid(url: str, timeout: float = 2.0) -> int | None:
    """The pid of the Redis serving ``url`` (``INFO server``'s ``process_id``), or None when
    it does not answer: what a tool signals (the chaos driver) or watches (the soak)."""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return int(client.info("server")["process_id"])
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


@dataclass(frozen=True, slots=True)
class ServerMark:
    """Which Redis process holds the log (``INFO server``'s ``run_id``, new at every start)
    and the log's head there: what an actor compares to tell that the log behind it changed."""

    run_id: str
    head: Position


def needs_reload(seen: ServerMark | None, now: ServerMark) -> bool:
    """Whether what an actor holds in memory (versions, positions, folded state) may be
    ahead of the log now, so it must be read again from the log.

    A new ``run_id`` means Redis restarted: with ``appendfsync everysec`` a crash loses up
    to its last second, and nothing tells which second, so every restart counts (reloading
    after a clean one costs a read, not a wrong decision). A head behind the one seen before
    on the same server means the log was put back some other way (an older copy loaded).
    The first mark seen is the baseline: nothing to compare it with."""
    if seen is None:
        return False
    if now.run_id != seen.run_id:
        return True
    return position_key(now.head) < position_key(seen.head)
