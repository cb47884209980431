"""What every actor shell gets from :func:`traced_actor`: its logs set up, and correlation
ids carried across Ray calls.

Ray copies no context from caller to callee, so a correlation id crosses a call as an
argument: callers pass ``correlation_id=`` (:func:`~events.correlation.correlation_kwargs`),
and every public coroutine method of a traced actor accepts it and runs inside
:func:`~events.correlation.correlated`. The method's own signature is kept, plus that one
keyword, so Ray still refuses a call with wrong arguments at the caller.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from actors.runtime.logs import configure_actor_logging
from events.correlation import correlated

__all__ = ["traced_actor"]

T = TypeVar("T", bound=type)
_KEYWORD = "correlation_id"


def _with_correlation(method: Callable[..., Any]) -> Callable[..., Any]:
    async def call(self: Any, *args: Any, correlation_id: str | None = None, **kwargs: Any) -> Any:
        with correlated(correlation_id):
            return await method(self, *args, **kwargs)

    functools.update_wrapper(call, method)
    del call.__wrapped__  # type: ignore[attr-defined]  # Ray must see the new signature
    signature = inspect.signature(method)
    params = list(signature.parameters.values())
    extra = inspect.Parameter(_KEYWORD, inspect.Parameter.KEYWORD_ONLY, default=None)
    at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*params[:at], extra, *params[at:]]
    )
    return call


def _logging_first(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        import ray

        configure_actor_logging(ray.get_runtime_context().get_actor_name() or type(self).__name__)
        init(self, *args, **kwargs)

    return wrapped


def traced_actor(cls: T) -> T:
    """Apply beneath ``@ray.remote``: logs configured before ``__init__`` runs, and every
    public coroutine method defined on the class taking ``correlation_id=``."""
    for name, member in list(vars(cls).items()):
        if name.startswith("_") or not inspect.iscoroutinefunction(member):
            continue
        if _KEYWORD in inspect.signature(member).parameters:
            raise TypeError(f"{cls.__name__}.{name} has its own {_KEYWORD!r} parameter")
        setattr(cls, name, _with_correlation(member))
    if "__init__" in vars(cls):
        cls.__init__ = _logging_first(cls.__init__)  # type: ignore[misc]
    return cls
