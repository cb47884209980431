"""Passwords at the front door: ``POST /auth/authorize`` (an e-mail and password for the
user's keypair, what web UIs and session-mode logins call) and ``POST
/auth/update-password`` (the client's ``backend.ai update-password``).

A password is checked against the salted slow hash the tenancy read model keeps apart from
the user record (``credential/<user id>``, one lookup). Guessing is bounded three ways:
failed attempts per account *from one address* (:data:`LOGIN_ATTEMPTS`) and per address
over every account (:data:`PEER_LOGIN_ATTEMPTS`) in :data:`LOGIN_WINDOW_S`, then ``429``
(keyed by the pair, so a stranger's failures never lock the owner out from their own
address); two hashes at a time in the process (:mod:`actors.domain.passwords`); and an
unknown account costs the same lookup and hash as a known one, so the answer's time does not
tell which e-mails exist.

A password opens no more than a signature would: the user's ``allowed_client_ip``, their
domain's being active, and the revocations the gateway follows apply to the keypair it hands
out, before it is handed out.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from ..domain.commands.tenancy import UpdateUser
from ..domain.errors import GenericBadRequest
from ..domain.passwords import (
    MAX_PASSWORD_BYTES,
    hash_password,
    hash_password_async,
    verify_password_async,
)
from .admin.base import AdminCall
from .auth import networks_of, peer_allowed
from .context import GatewayContext
from .params import _Strict, parse, raw_params
from .problems import AuthorizationFailed, GatewayError
from .ratelimit import PeerLimiter

__all__ = ["LOGIN_ATTEMPTS", "LOGIN_WINDOW_S", "PEER_LOGIN_ATTEMPTS", "login_routes"]

LOGIN_ATTEMPTS = 10
"""Failed log-ins into one account from one address in a window (then that address waits
for that account)."""
PEER_LOGIN_ATTEMPTS = 100
"""Failed log-ins one address may make in a window, over every account it tries."""
LOGIN_WINDOW_S = 300.0
_NOBODY = "00000000-0000-0000-0000-000000000000"
"""The credential looked up for an unknown account (there is none: the read costs the same)."""
_DUMMY = hash_password("kernelhub: no such account")
"""Hashed against when the account is unknown (see the module's docstring)."""
_FAILED = "User credential mismatch."


class LoginsRefused(GatewayError):
    status, error_type = 429, "too-many-requests"
    title = "Too many failed log-ins: wait before trying again."


class AuthorizeParams(_Strict):
    type: str = "keypair"
    domain: str = Field(max_length=64)
    username: str = Field(max_length=256)
    """The user's e-mail (23.03 calls it the username here)."""
    password: str = Field(max_length=MAX_PASSWORD_BYTES)


class UpdatePasswordParams(_Strict):
    old_password: str = Field(max_length=MAX_PASSWORD_BYTES)
    new_password: str = Field(max_length=MAX_PASSWORD_BYTES)
    new_password2: str = Field(max_length=MAX_PASSWORD_BYTES)


def _limiters(request: web.Request) -> tuple[PeerLimiter, PeerLimiter]:
    """Failed log-ins (per account, per peer) for this gateway."""
    app = request.app
    if "logins" not in app:
        app["logins"] = (
            PeerLimiter(limit=LOGIN_ATTEMPTS, window_s=LOGIN_WINDOW_S),
            PeerLimiter(limit=PEER_LOGIN_ATTEMPTS, window_s=LOGIN_WINDOW_S),
        )
    limiters: tuple[PeerLimiter, PeerLimiter] = app["logins"]
    return limiters


async def _checked(request: web.Request, account: str, user_id: str | None, password: str) -> bool:
    """Whether ``password`` is the account's, counting a failure against the (account,
    address) pair and the address (a refusal before hashing once either is out of attempts)."""
    ctx: GatewayContext = request.app["ctx"]
    accounts, peers = _limiters(request)
    peer = request.remote or "unknown"
    pair = f"{account.lower()}|{peer}"
    if accounts.over(pair) or peers.over(peer):
        raise LoginsRefused()
    stored = await ctx.lookups.password_hash(user_id or _NOBODY)
    matched = await verify_password_async(password, stored or _DUMMY)
    if matched and stored:
        return True
    accounts.fail(pair)
    peers.fail(peer)
    return False


async def authorize(request: web.Request) -> web.Response:
    """An active user's e-mail and password for their first active keypair, as 23.03's
    ``authorize`` (type ``keypair``)."""
    ctx: GatewayContext = request.app["ctx"]
    params = parse(AuthorizeParams, await raw_params(request))
    if params.type != "keypair":
        raise GenericBadRequest(f"unsupported authorization type {params.type!r} (only keypair)")
    user = await ctx.lookups.user_by_email(params.username)
    usable = user is not None and user.get("domain") == params.domain
    user_id = str(user["user_id"]) if user is not None and usable else None
    if not await _checked(request, params.username, user_id, params.password) or user is None:
        raise AuthorizationFailed(_FAILED)
    if user.get("status") != "active":
        raise AuthorizationFailed("The user is not active.")
    if not peer_allowed(request.remote, networks_of(user.get("allowed_client_ip"))):
        raise AuthorizationFailed("Access from this address is not allowed.")
    domain = await ctx.lookups.domain(str(user.get("domain")))
    if (
        domain is None
        or not domain.get("is_active", True)
        or ctx.auth.revoked.refuses("", "", str(user.get("domain")))
    ):
        raise AuthorizationFailed("The domain is not active.")
    keypairs = [
        k
        for k in await ctx.lookups.keypairs_of(str(user["user_id"]))
        if k["is_active"] and not ctx.auth.revoked.refuses(k["access_key"], str(user["user_id"]))
    ]
    for keypair in sorted(keypairs, key=lambda k: (not k.get("is_admin"), k["access_key"])):
        secret = await ctx.auth.secret_of(keypair["access_key"])
        if secret is not None:
            data: dict[str, Any] = {
                "access_key": keypair["access_key"],
                "secret_key": secret,
                "role": user.get("role"),
                "status": user.get("status"),
            }
            return web.json_response({"data": data})
    raise AuthorizationFailed("The user has no active keypair.")


async def update_password(request: web.Request) -> web.Response:
    """The caller's own password, given the current one (23.03's ``update-password``)."""
    ctx: GatewayContext = request.app["ctx"]
    caller = request["caller"]
    params = parse(UpdatePasswordParams, await raw_params(request))
    if params.new_password != params.new_password2:
        raise GenericBadRequest("new password mismatch")
    email = str((caller.user or {}).get("email") or caller.user_id)  # authorize's account key
    if not await _checked(request, email, str(caller.user_id), params.old_password):
        raise AuthorizationFailed("Old password mismatch.")
    hashed = await hash_password_async(params.new_password)
    command = UpdateUser(user_id=caller.user_id, password_hash=hashed, need_password_change=False)
    await AdminCall(ctx, caller, request.remote).tenancy(command)
    return web.json_response({})


def login_routes() -> list[web.RouteDef]:
    return [
        web.post("/auth/authorize", authorize),
        web.post("/auth/update-password", update_password),
    ]
