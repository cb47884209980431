"""The blocking twin of an async API class: every public coroutine method of the async
class, run on a :class:`~kernelhub.sdk.sync.Client`'s event loop. Delegated rather than
written twice, so a blocking API (``Admin``, ``VFolders``, ``Services``) cannot drift from
its async one."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .sync import Client

__all__ = ["BlockingTwin"]


class BlockingTwin:
    async_class: ClassVar[type]
    """The async API class this one runs (built over the client's ``AsyncClient``)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._async = self.async_class(client._async)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._async, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(method):
            raise AttributeError(name)

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self.client._call(method, *args, **kwargs)

        return call

    def __dir__(self) -> list[str]:
        public = [n for n in dir(self.async_class) if not n.startswith("_")]
        return sorted({*super().__dir__(), *public})
