"""Signed HTTP to the gateway, as the official client signs, with the retry rules the chaos
workload promises: a 503 (the log unreachable) is waited out for its ``Retry-After`` and
sent again unchanged (same name, same run id), so a retry can never double an effect.

Other failures (a 500, a broken connection) leave the outcome unknown: an idempotent call
(a create with ``reuseIfExists`` under the same name, a destroy) is retried; an execution
is not (running user code twice is the very thing the checker looks for).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from kernelhub.sdk._wire import HMACAuth

from .record import ClientRecord

__all__ = ["Answer", "GatewayClient"]

_MAX_RETRY_AFTER_S = 10.0


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    attempts: int


class GatewayClient:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        record: ClientRecord,
        *,
        timeout_s: float = 90.0,
    ) -> None:
        self.record = record
        self._http = httpx.AsyncClient(
            base_url=endpoint,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            auth=HMACAuth(access_key, secret_key, "default"),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        what: str,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        idempotent: bool,
        deadline: float,
    ) -> Answer | None:
        """The first answer that is not a 503 (nor, for an idempotent call, a 5xx or a broken
        connection) before ``deadline`` (monotonic); None when there was none."""
        attempts = 0
        while time.monotonic() < deadline:
            attempts += 1
            try:
                response = await self._http.request(method, path, json=json_body, params=params)
            except httpx.TransportError as exc:
                self.record.count_error(f"{what}:{type(exc).__name__}")
                if not idempotent:
                    return None
                await asyncio.sleep(1.0)
                continue
            if response.status_code == 503:
                self.record.retried_503 += 1
                await asyncio.sleep(_retry_after(response))
                continue
            if response.status_code >= 500:
                self.record.count_error(f"{what}:{response.status_code}")
                if not idempotent:
                    return Answer(response.status_code, _body(response), attempts)
                await asyncio.sleep(1.0)
                continue
            return Answer(response.status_code, _body(response), attempts)
        self.record.count_error(f"{what}:deadline")
        return None


def _retry_after(response: httpx.Response) -> float:
    try:
        seconds = float(response.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), _MAX_RETRY_AFTER_S)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return response.text
