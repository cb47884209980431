"""Who may administer what: pure rules, read by every admin resolver and mutation.

Backend.AI 23.03's roles (``privileged_mutation``, ``scoped_query``):
- a **superadmin** administers everything: domains, scaling groups, images, resource
  presets, and every domain's users, projects, keypairs and policies' use;
- a **domain admin** (the user's role ``admin``) administers the users, projects and keypairs
  of their own domain only, and never a superadmin's;
- a **user** sees their own user record and keypairs, nothing else.

A refusal is a ``403 generic-forbidden`` that does not say whether the other domain's
record exists.

Administration follows the *user's role* alone, as 23.03's ``privileged_mutation`` does: a
keypair's ``is_admin`` flag (which REST honours for acting on other keypairs' sessions) grants
nothing here, so no keypair can be an admin its user record does not show
(:func:`administering` is the caller the admin areas see).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ...domain.errors import GenericForbidden
from ..auth import Caller
from ..scope import Viewer, is_domain_admin

__all__ = [
    "ADMIN_ROLES",
    "administering",
    "may_manage_domain",
    "may_manage_user",
    "may_see_user",
    "require_domain_admin",
    "require_superadmin",
    "require_user_admin",
]


ADMIN_ROLES = frozenset({"admin", "superadmin"})


def administering(caller: Caller) -> Caller:
    """``caller`` as the admin areas judge it: admin by the user's role, not the keypair's
    flag (a plain user holding an admin keypair administers nothing)."""
    by_role = caller.role in ADMIN_ROLES
    return caller if caller.is_admin == by_role else replace(caller, is_admin=by_role)


def require_superadmin(caller: Viewer, what: str) -> None:
    """Domains, scaling groups, images, presets: a superadmin's only."""
    if not caller.is_superadmin:
        raise GenericForbidden(f"only a superadmin may {what}")


def may_manage_domain(caller: Viewer, domain: str) -> bool:
    """Whether ``caller`` administers the users, projects and keypairs of ``domain``."""
    return caller.is_superadmin or (is_domain_admin(caller) and caller.domain == domain)


def require_domain_admin(caller: Viewer, domain: str, what: str) -> None:
    if not may_manage_domain(caller, domain):
        raise GenericForbidden(f"only a superadmin or an admin of the domain may {what}")


def may_manage_user(caller: Viewer, user: Mapping[str, Any]) -> bool:
    """A domain admin manages their domain's users, but no superadmin."""
    if caller.is_superadmin:
        return True
    return may_manage_domain(caller, str(user.get("domain"))) and user.get("role") != "superadmin"


def require_user_admin(caller: Viewer, user: Mapping[str, Any] | None, what: str) -> None:
    """Refuse unless ``caller`` manages ``user`` (an unknown user reads the same)."""
    if user is None or not may_manage_user(caller, user):
        raise GenericForbidden(f"only a superadmin or an admin of the user's domain may {what}")


def may_see_user(caller: Viewer, user: Mapping[str, Any], own_user_id: str) -> bool:
    """One's own record, or any one manages."""
    return str(user.get("user_id")) == own_user_id or may_manage_user(caller, user)
