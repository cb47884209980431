"""The Redis server as such, for those who start it or report on it (not the log: see the
store): whether it answers, and the one exception type its client raises.
"""

from __future__ import annotations

import redis

__all__ = ["SERVER_GONE", "ServerError", "server_probe"]

ServerError = redis.exceptions.RedisError
"""What the Redis client raises when the server refuses or cannot be reached."""
SERVER_GONE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
"""What the client raises while the server is away (waited out by whoever follows the log)."""


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
