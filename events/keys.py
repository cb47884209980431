"""Every Redis key kernelhub's log uses, in one place (the storage layout on one screen).

``<p>`` is the key prefix (``kh`` unless configured; tests and benchmarks may use others).

==========================  ======  ===================================================
key                         type    holds
==========================  ======  ===================================================
``<p>:log``                 stream  the global log; entry = {s: stream, v: version, e: body}
``<p>:ids``                 hash    event_id -> "<position> <version>" (retry detection)
``<p>:s:<stream>``          list    global positions of the stream's events, in version order
``<p>:snap:<stream>``       hash    latest snapshot: version, schema, state (canonical JSON)
``<p>:p:<name>:active``     string  the generation of projection ``<name>`` that serves reads
``<p>:p:<name>:next``       string  generation counter (INCR) for rebuilds
``<p>:p:<name>:g<N>:ckpt``  string  last log position folded into generation N
``<p>:p:<name>:g<N>:r:<k>`` hash    read-model records of kind k: id -> canonical JSON
``<p>:p:<name>:g<N>:i:...`` zset/   secondary indexes of generation N (see each model)
                            hash
``<p>:p:<name>:status``     hash    position, lag, rate, state, error (for ``kh projections``)
``<p>:p:alarms``            hash    projection name -> why it stopped
``<p>:hb``                  zset    agent id -> last heartbeat (Redis time, s): telemetry
``<p>:follow:<actor>``      string  last log position an actor has reacted to
``<p>:stat:<kernel>``       string  a kernel's live stats (JSON, TTL'd): telemetry
``<p>:stat:agent:<a>:...``  string  ``...:devices``: an agent's devices, live (TTL'd)
``<p>:install``             hash    facts of the install (``shards``: session shards, fixed;
                                    ``allow_unisolated``: the operator's opt-in, 1/0)
``<p>:archive``             hash    archive file path -> its range (``kh events archive``)
``<p>:idle:due``            zset    session id -> when the reaper judges it next (Redis s)
``<p>:idle:access:<sid>``   string  the session's last activity (Redis time): telemetry
``<p>:idle:report:<sid>``   string  the idle checkers' last report (JSON, TTL 150 s)
``<p>:idle:util:<kernel>``  string  a kernel's recent utilization samples (JSON, TTL'd)
``<p>:idle:apps:<sid>``     zset    the session's open app connections (id -> opened at)
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

    # ---- projections ----------------------------------------------------------------------
    def projection_active(self, name: str) -> str:
        return f"{self.prefix}:p:{name}:active"

    def projection_counter(self, name: str) -> str:
        return f"{self.prefix}:p:{name}:next"

    def projection_generation(self, name: str, generation: int) -> str:
        """Prefix of every key of one generation (records, indexes, checkpoint)."""
        return f"{self.prefix}:p:{name}:g{generation}"

    def projection_status(self, name: str) -> str:
        return f"{self.prefix}:p:{name}:status"

    def follower(self, actor: str) -> str:
        return f"{self.prefix}:follow:{actor}"

    def kernel_stats(self, kernel_id: str) -> str:
        return f"{self.prefix}:stat:{kernel_id}"

    @property
    def archive(self) -> str:
        """Archive files of this log: path -> JSON ``{first, last, events, sessions}``."""
        return f"{self.prefix}:archive"

    def agent_devices(self, agent_id: str) -> str:
        """An agent's accelerator devices, live (utilization, memory; TTL'd telemetry)."""
        return f"{self.prefix}:stat:agent:{agent_id}:devices"

    @property
    def gateway_port(self) -> str:
        """The port a gateway asked for "any free port" took, kept so a restarted gateway
        answers where clients were told to connect."""
        return f"{self.prefix}:gateway:port"

    def kernel_logs(self, kernel_id: str) -> str:
        """A terminated kernel's log (capped, TTL'd): telemetry, not state."""
        return f"{self.prefix}:logs:{kernel_id}"

    @property
    def idle_due(self) -> str:
        return f"{self.prefix}:idle:due"

    def idle_access(self, session_id: str) -> str:
        return f"{self.prefix}:idle:access:{session_id}"

    def idle_utilization(self, kernel_id: str) -> str:
        return f"{self.prefix}:idle:util:{kernel_id}"

    def idle_apps(self, session_id: str) -> str:
        return f"{self.prefix}:idle:apps:{session_id}"

    def idle_report(self, session_id: str) -> str:
        return f"{self.prefix}:idle:report:{session_id}"

    @property
    def install(self) -> str:
        return f"{self.prefix}:install"

    @property
    def heartbeats(self) -> str:
        return f"{self.prefix}:hb"

    @property
    def projection_alarms(self) -> str:
        return f"{self.prefix}:p:alarms"
