"""Who may run code on an agent that does not isolate kernels (docs/security.md, What
isolation each backend gives).

The process backend runs a kernel as a plain child process of the agent: the operator's uid,
on the host, beside ``master.key``. That is fine for one trusted user (the demo, development)
and a breach in a multi-user installation. So a session whose owner is not a superadmin is
refused wherever it could land on such an agent, unless the operator opted in to running
tenants unisolated (``kh up --allow-unisolated``, recorded in the installation).

The rule is pure; the gateway (a 4xx at create) and the agent (the last check before a
kernel starts, whatever path the session took) apply it.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import GenericForbidden

__all__ = [
    "ISOLATION_OF_BACKEND",
    "OPT_IN_HINT",
    "UNISOLATED",
    "UnisolatedBackend",
    "isolation_of_backend",
    "refusal",
]

UNISOLATED = "none"
"""An agent's ``isolation`` when its kernels run as host processes."""

ISOLATION_OF_BACKEND = {"docker": "container", "process": UNISOLATED, "sim": "simulated"}
"""What each backend gives: a container per kernel, nothing, or no code run at all."""

OPT_IN_HINT = "kh up --allow-unisolated (or KH_ALLOW_UNISOLATED=1)"


class UnisolatedBackend(GenericForbidden):
    """A tenant's session refused: it would run unisolated (a forbidden operation, 403 at
    the gateway like Backend.AI's other permission refusals, with its own type so clients
    can tell it apart)."""

    error_type = "unisolated-backend"
    title = "This scaling group runs kernels without isolation."


def isolation_of_backend(kind: str) -> str:
    """``container``, ``none`` or ``simulated`` for a backend kind (unknown kinds: none, so
    a new backend is refused to tenants until it says what it isolates)."""
    return ISOLATION_OF_BACKEND.get(kind, UNISOLATED)


def refusal(
    *, owner_role: str | None, isolations: Iterable[str | None], opted_in: bool, where: str
) -> UnisolatedBackend | None:
    """Why a session of an owner with ``owner_role`` may not run where agents of
    ``isolations`` could take it, or None when it may.

    A superadmin is the operator (``kh up``'s keypair): their own code may run anywhere.
    ``None`` as an isolation is an agent registered before agents said what they isolate;
    it registers again when it starts, so it is not held against anyone.
    """
    if opted_in or owner_role == "superadmin":
        return None
    if not any(isolation == UNISOLATED for isolation in isolations):
        return None
    return UnisolatedBackend(
        f"{where} runs kernels on the process backend, as the operator's uid on the host with "
        f"no isolation; only a superadmin's sessions run there unless the operator opts in: "
        f"{OPT_IN_HINT}"
    )
