"""Every Redis key kernelhub's log uses, in one place (the storage layout on one screen).

``<p>`` is the key prefix (``kh`` unless configured; tests and benchmarks may use others).

==========================  ======  ===================================================
key                         type    holds
==========================  ======  ===================================================
``<p>:log``                 stream  the global log; entry = {s: stream, v: version, e: body,
                                    h: chain link}
``<p>:ids``                 hash    event_id -> "<position> <version>" (retry detection)
``<p>:chain``               string  "<position> <hash>" of the log's last entry: the hash
                                    chain's head (entries carry ``h``, docs/audit.md)
``<p>:s:<stream>``          list    global positions of the stream's events, in version order
``<p>:snap:<stream>``       hash    latest snapshot: version, schema, state (canonical JSON)
``<p>:p:<name>:active``     string  the generation of projection ``<name>`` that serves reads
``<p>:p:<name>:next``       string  generation counter (INCR) for rebuilds
``<p>:p:<name>:g<N>:ckpt``  string  last log position folded into generation N
``<p>:p:<name>:g<N>:meta``  hash    ``version``: the projection code that folded it
``<p>:p:<name>:g<N>:r:<k>`` hash    read-model records of kind k: id -> canonical JSON
``<p>:p:<name>:g<N>:i:...`` zset/   secondary indexes of generation N (the ``*Indexes``
                            hash    classes below name each one)
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
``<p>:gateway:port``        string  the port a gateway took when asked for any free one
``<p>:logs:<kernel>``       string  a terminated kernel's log (capped, TTL'd): telemetry
``<p>:ratelimit:<ak>``      zset    a keypair's requests in the rolling window (TTL'd)
``<p>:ratelimit:seq``       string  request counter (members of the windows above)
==========================  ======  ===================================================

Streams are named ``session-<uuid>``, ``alloc-<scaling group>``, ``agent-<id>``,
``tenancy-*``, ``image-*`` and ``config`` (docs/architecture.md, Streams and their writers).

Nothing outside this module spells a key (``tests/test_code_shape.py`` fails when one does):
the writers and readers in ``events/`` build them here, and a projection and its queries
share the index names of the ``*Indexes`` classes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CHECKPOINT",
    "DEFAULT_PREFIX",
    "GENERATION_SEGMENTS",
    "INSTALL_ALLOW_UNISOLATED",
    "INSTALL_SHARDS",
    "META",
    "TOP_SEGMENTS",
    "AgentIndexes",
    "KeySpace",
    "SessionIndexes",
    "TenancyIndexes",
    "record_hash",
]

DEFAULT_PREFIX = "kh"

TOP_SEGMENTS = (
    "log",
    "ids",
    "chain",
    "s",
    "snap",
    "p",
    "hb",
    "follow",
    "stat",
    "install",
    "archive",
    "idle",
    "gateway",
    "logs",
    "ratelimit",
)
"""The first segment after ``<p>:`` of every key above (what the code-shape test looks for)."""
GENERATION_SEGMENTS = ("r", "i", "ckpt", "meta", "active", "next", "status", "alarms")
"""Segments under a projection or one of its generations."""

INSTALL_SHARDS = "shards"
"""Field of ``<p>:install``: the session shard count, fixed at install."""
INSTALL_ALLOW_UNISOLATED = "allow_unisolated"
"""Field of ``<p>:install``: the operator's opt-in to unisolated agents (``1``/``0``)."""

CHECKPOINT = "ckpt"
"""Relative to a generation: the last log position folded into it."""
META = "meta"
"""Relative to a generation: which version of the projection's code folded it."""


def record_hash(kind: str) -> str:
    """Relative to a generation: the hash of the records of ``kind`` (id -> canonical JSON)."""
    return f"r:{kind}"


class SessionIndexes:
    """The ``sessions`` projection's indexes, relative to a generation (sorted sets scored by
    creation time unless said otherwise)."""

    ALL = "i:all"
    KERNEL = "i:kernel"
    """hash: kernel id -> session id."""

    @staticmethod
    def status(status: str) -> str:
        return f"i:status:{status}"

    @staticmethod
    def type(session_type: str) -> str:
        return f"i:type:{session_type}"

    @staticmethod
    def owner(access_key: str) -> str:
        return f"i:owner:{access_key}"

    @staticmethod
    def scaling_group(name: str) -> str:
        return f"i:sg:{name}"

    @staticmethod
    def pending(scaling_group: str) -> str:
        """PENDING sessions of a group, scored by scheduling order."""
        return f"i:pending:{scaling_group}"

    @staticmethod
    def project(project_id: str) -> str:
        return f"i:project:{project_id}"

    @staticmethod
    def dependants(session_id: str) -> str:
        return f"i:dependants:{session_id}"

    @staticmethod
    def mounting(folder_hex: str) -> str:
        """Sessions not ended (pending ones too) that mount the folder ``<hex>``: a folder
        is not trashed while one is there (``projections.mount_queries``)."""
        return f"i:vfolder:{folder_hex}"

    @staticmethod
    def name(access_key: str) -> str:
        """hash: session name -> session id, per keypair."""
        return f"i:name:{access_key}"

    @staticmethod
    def ref_names(access_key: str) -> str:
        """lex zset (scores 0): ``<name> <session id>`` of every session of a keypair (a
        reused name finds each of its sessions; a name prefix finds each name)."""
        return f"i:refs:name:{access_key}"

    @staticmethod
    def ref_live_names(access_key: str) -> str:
        """lex zset (scores 0): ``<name> <session id>`` of each session of a keypair that has
        not ended (a name lookup reads these few, however many ended sessions bore it)."""
        return f"i:refs:live:{access_key}"

    @staticmethod
    def ref_ids(access_key: str) -> str:
        """lex zset (scores 0): the id of every session of a keypair (an id prefix)."""
        return f"i:refs:id:{access_key}"

    @staticmethod
    def usage_open(scope: str) -> str:
        """hash: session id -> its running interval."""
        return f"i:usage:open:{scope}"

    @staticmethod
    def usage_closed(scope: str) -> str:
        """zset: closed interval -> its end (ms)."""
        return f"i:usage:closed:{scope}"


class AgentIndexes:
    """The ``agents`` projection's indexes, relative to a generation (sorted sets)."""

    ALL = "i:all"

    @staticmethod
    def scaling_group(name: str) -> str:
        return f"i:sg:{name}"

    @staticmethod
    def status(status: str) -> str:
        return f"i:status:{status}"


class TenancyIndexes:
    """The ``tenancy`` projection's indexes, relative to a generation."""

    PRESETS = "i:presets"
    USER_EMAIL = "i:user:email"
    """hash: email -> user id."""
    USER_NAME = "i:user:name"
    """hash: username -> user id."""

    @staticmethod
    def every(kind: str) -> str:
        """Every record of a kind (``domain``, ``user``, ...): what admin listings walk."""
        return f"i:all:{kind}"

    @staticmethod
    def keypairs(user_id: str) -> str:
        return f"i:keypairs:{user_id}"

    @staticmethod
    def projects(member: str) -> str:
        return f"i:projects:{member}"

    @staticmethod
    def scaling_groups_for(kind: str, target: str) -> str:
        """Scaling groups associated with a ``domain``, ``project`` or ``keypair``."""
        return f"i:sg_for:{kind}:{target}"

    @staticmethod
    def project_names(domain: str) -> str:
        """hash: project name -> project id, per domain."""
        return f"i:project:{domain}"

    @staticmethod
    def vfolders_of(kind: str, owner: str) -> str:
        """Folders owned by a ``user`` or a ``group`` (project), or ``shared`` with a user."""
        return f"i:vfolders:{kind}:{owner}"

    @staticmethod
    def invitations_for(user_id: str) -> str:
        """Pending folder invitations of an invitee."""
        return f"i:invitations:{user_id}"

    @staticmethod
    def endpoints_of(kind: str, owner: str) -> str:
        """Inference endpoints not yet destroyed, of a ``user`` (their owner) or a
        ``project``."""
        return f"i:endpoints:{kind}:{owner}"


@dataclass(frozen=True, slots=True)
class KeySpace:
    prefix: str = DEFAULT_PREFIX

    @property
    def log(self) -> str:
        return f"{self.prefix}:log"

    @property
    def event_ids(self) -> str:
        return f"{self.prefix}:ids"

    @property
    def chain(self) -> str:
        return f"{self.prefix}:chain"

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
        return f"{self.projection_generations(name)}{generation}"

    def projection_key(self, name: str, generation: int, relative: str) -> str:
        """A key of one generation, from its relative name (``record_hash``, an index)."""
        return f"{self.projection_generation(name, generation)}:{relative}"

    def projection_generation_keys(self, name: str, generation: int) -> str:
        """The SCAN pattern of every key of one generation (maintenance and inspection only)."""
        return self.generation_keys(self.projection_generation(name, generation))

    @staticmethod
    def generation_keys(generation_prefix: str) -> str:
        return f"{generation_prefix}:*"

    def projection_checkpoint(self, name: str, generation: int) -> str:
        return self.projection_key(name, generation, CHECKPOINT)

    def projection_meta(self, name: str, generation: int) -> str:
        return self.projection_key(name, generation, META)

    def projection_generations(self, name: str) -> str:
        """What every generation prefix of ``name`` starts with (the number follows)."""
        return f"{self.prefix}:p:{name}:g"

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

    def rate_limit(self, access_key: str) -> str:
        """A keypair's requests in the rolling window (members: request numbers)."""
        return f"{self.prefix}:ratelimit:{access_key}"

    @property
    def rate_limit_seq(self) -> str:
        return f"{self.prefix}:ratelimit:seq"

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
