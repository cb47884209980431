"""``gateway``: Backend.AI's HTTP API (:mod:`actors.gateway`) served from a Ray actor,
bound to 127.0.0.1 unless told otherwise. Port 0 takes a free one (:meth:`address` says
which) and records it, so the actor restarted after a crash binds the same one again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
from aiohttp import web

from actors.idle.facts import IdleFacts
from actors.runtime.metrics import ActorMetrics
from actors.sessions.routing import ShardRouter
from events import RedisEventStore
from events.secrets import SecretBox
from projections.queries import ReadModels
from projections.tenancy_queries import TenancyLookups

from ..domain.callbacks import CallbackPolicy
from ..domain.idle import IdleConfig
from ..gateway.app import make_app
from ..gateway.auth import Authenticator
from ..gateway.context import GatewayContext
from ..gateway.ratelimit import RateLimiter
from ._follower import boot
from ._traced import traced_actor

__all__ = ["DEFAULT_GATEWAY_PORT", "GatewayActor", "vfolder_root_for"]

DEFAULT_GATEWAY_PORT = 8081
"""Backend.AI manager's default port."""
_SERVING_METRICS = (
    "kernelhub_serving_requests_total",
    "kernelhub_serving_request_seconds",
    "kernelhub_serving_errors_total",
)
"""The inference proxy's per-endpoint metrics (endpoint + status; endpoint; endpoint +
reason)."""


def vfolder_root_for(master_key_path: Path) -> Path:
    """The ``local:default`` storage host's directory: ``$KH_VFOLDER_ROOT``, else
    ``vfolders/`` beside the installation's master key (in ``$KH_DATA_DIR``)."""
    configured = os.environ.get("KH_VFOLDER_ROOT")
    return Path(configured) if configured else master_key_path.parent / "vfolders"


@ray.remote(max_restarts=-1)
@traced_actor
class GatewayActor:
    def __init__(
        self,
        redis_url: str,
        shards: tuple[int, str],
        master_key_path: str,
        prefix: str = "kh",
        host: str = "127.0.0.1",
        port: int = DEFAULT_GATEWAY_PORT,
        idle: dict[str, Any] | None = None,
        callback_policy: CallbackPolicy | None = None,
    ) -> None:
        self.store = RedisEventStore.from_url(redis_url, prefix=prefix)
        secrets = SecretBox.from_file(Path(master_key_path), create=True)
        lookups = TenancyLookups(self.store)
        self.ctx = GatewayContext(
            store=self.store,
            router=ShardRouter.named(self.store, *shards),
            auth=Authenticator(lookups, secrets),
            models=ReadModels(self.store),
            lookups=lookups,
            rate_limiter=RateLimiter(self.store.rate_limits),
            idle=IdleFacts(self.store, IdleConfig.parse(idle or {})),
            observe=self._observe,
            observe_serving=self._observe_serving,
            callbacks=callback_policy or CallbackPolicy(),  # how create checks callback_url
            vfolder_root=vfolder_root_for(Path(master_key_path)),
        )
        self.metrics = ActorMetrics(
            "kernelhub_gateway_requests_total",
            "kernelhub_gateway_request_seconds",
            *_SERVING_METRICS,
        )
        self.host, self.port = host, port
        self.runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._boot = boot(self._serve)

    def _observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.metrics.inc(
            "kernelhub_gateway_requests_total", route=route, method=method, status=str(status)
        )
        self.metrics.observe("kernelhub_gateway_request_seconds", seconds, route=route)

    def _observe_serving(
        self, endpoint: str, status: int, seconds: float, error: str | None
    ) -> None:
        """One answer of the inference proxy, per endpoint (its id: an endpoint is a handful
        of series, and ids are bounded by the endpoints that exist)."""
        self.metrics.inc(_SERVING_METRICS[0], endpoint=endpoint, status=str(status))
        self.metrics.observe(_SERVING_METRICS[1], seconds, endpoint=endpoint)
        if error is not None:
            self.metrics.inc(_SERVING_METRICS[2], endpoint=endpoint, reason=error)

    async def metrics_snapshot(self) -> dict[str, float]:
        return self.metrics.snapshot()

    async def _serve(self) -> None:
        """Listen (run again by :func:`boot` while Redis is away at start: each step is done
        once; a port remembered from before is waited for, so a restart keeps its port)."""
        if self.runner is None:
            runner = web.AppRunner(make_app(self.ctx), access_log=None)
            await runner.setup()
            self.runner = runner
        if self._site is None:
            chosen = self.port
            if chosen == 0:  # a restart: the port the first incarnation took, if it is free
                chosen = await self.store.install.gateway_port() or 0
            try:
                self._site = await self._bind(chosen)
            except OSError:
                if chosen == self.port:
                    raise
                self._site = await self._bind(self.port)  # taken meanwhile: a new free one
        site = self._site
        sockets = [s.getsockname() for s in site._server.sockets]  # type: ignore[union-attr]
        bound = int(sockets[0][1])
        if self.port == 0:
            await self.store.install.remember_gateway_port(bound)
        self.port = bound
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        self.ctx.serving_base = os.environ.get("KH_SERVING_URL") or f"http://{shown}:{bound}"

    async def _bind(self, port: int) -> web.TCPSite:
        assert self.runner is not None
        site = web.TCPSite(self.runner, self.host, port, reuse_address=True)
        await site.start()
        return site

    async def ready(self) -> bool:
        await self._boot
        return True

    async def process_id(self) -> int:
        """This incarnation's process (a restart shows as a new one)."""
        return os.getpid()

    async def address(self) -> tuple[str, int]:
        await self._boot
        return self.host, self.port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
