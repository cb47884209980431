"""Every Redis key kernelhub's log uses, in one place (the storage layout on one screen).

``<p>`` is the key prefix (``kh`` unless configured; tests and benchmarks may use others).

==========================  ======  ===================================================
key                         type    holds
==========================  ======  ===================================================
``<p>:log``                 stream  the global log; entry = {s: stream, v: version, e: body}
``<p>:ids``                 hash    event_id -> "<position> <version>" (retry detection)
``<p>:s:<stream>``          list    global positions of the stream's events, in version order
``<p>:snap:<stream>``       hash    latest snapshot: version, schema, state (canonical JSON)
==========================  ======  ===================================================

Streams are named ``session-<uuid>``, ``alloc-<scaling group>``, ``agent-<id>``,
``tenancy-*``, ``image-*`` and ``config`` (see design.md, Aggregates).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_PREFIX", "KeySpace"]

DEFAULT_PREFIX = "kh"


@dataclass(frozen=True, slots=True)
class KeySpace:
    prefix: str = DEFAULT_PREFIX

    @property
    def log(self) -> str:
        return f"{self.prefix}:log"

    @property
    def event_ids(self) -> str:
        return f"{self.prefix}:ids"

    def stream_index(self, stream: str) -> str:
        return f"{self.prefix}:s:{stream}"

    def snapshot(self, stream: str) -> str:
        return f"{self.prefix}:snap:{stream}"
