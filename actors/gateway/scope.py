"""Who may see a session and where a session may be created: the tenancy rules every entry
of the gateway applies (REST, GraphQL, dependencies), pure so they are tested alone.

Backend.AI's rules (``query_userinfo``, the GraphQL scopes):
- a superadmin sees every session and creates in any project of any domain;
- a domain admin (the user's role ``admin``, or an admin keypair) sees the sessions of their
  domain and creates in any project of it;
- a user sees their own keypair's sessions and creates only in projects they belong to, in
  their own domain.
A refusal never says whether the other tenant's project or session exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["Viewer", "creation_refusal", "is_domain_admin", "visible"]


class Viewer(Protocol):
    """What the rules read of a caller (``actors.gateway.auth.Caller`` is one)."""

    @property
    def access_key(self) -> str: ...

    @property
    def domain(self) -> str: ...

    @property
    def is_superadmin(self) -> bool: ...

    @property
    def may_act_for_others(self) -> bool: ...


def is_domain_admin(caller: Viewer) -> bool:
    """An admin scoped to one domain (a superadmin is not scoped)."""
    return caller.may_act_for_others and not caller.is_superadmin


def visible(caller: Viewer, record: Mapping[str, Any]) -> bool:
    """Whether ``caller`` may see the session ``record`` (its info, its id in a listing, a
    dependency on it)."""
    if caller.is_superadmin or record.get("access_key") == caller.access_key:
        return True
    return is_domain_admin(caller) and record.get("domain") == caller.domain


def creation_refusal(
    caller: Viewer,
    owner_user_id: str,
    owner_domain: str,
    domain: str,
    project: Mapping[str, Any] | None,
) -> str | None:
    """Why a session for the user ``owner_user_id`` (of ``owner_domain``) may not be created
    in ``project`` of ``domain`` by ``caller``; ``None`` when it may. An unknown project and
    a project the user may not use read the same (Backend.AI's "Invalid group")."""
    invalid = "Invalid group: no such project in this domain, or you are not a member of it"
    if project is None or str(project.get("domain", domain)) != domain:
        return invalid
    if not project.get("is_active", True):
        return invalid
    if caller.is_superadmin:
        return None
    if domain != owner_domain or domain != caller.domain:
        return "You can only set the domain to the owner's domain."
    if is_domain_admin(caller):
        return None
    members = {str(m) for m in project.get("members") or ()}
    return None if str(owner_user_id) in members else invalid
