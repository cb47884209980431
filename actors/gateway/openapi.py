"""The OpenAPI 3 document of the gateway's REST routes (``GET /openapi.json``), built from
the same pydantic models that validate the requests, so the two cannot drift apart.

Websocket and SSE routes are left out (OpenAPI has no words for them); every operation
needs the HMAC signature (the ``BackendAI`` scheme, :mod:`kernelhub.signing`) except ``GET /``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from . import API_VERSION
from .folder_params import (
    AcceptInvitation,
    CloneFolder,
    CreateFolder,
    DeleteById,
    InviteUsers,
    LeaveFolder,
    RenameFolder,
    ShareFolder,
    UnshareFolder,
    UpdateOptions,
)
from .login import AuthorizeParams, UpdatePasswordParams
from .params import CreateParams, ExecuteParams
from .service_params import ScaleService, ServiceCreate, TokenRequest, TrafficRatio

__all__ = ["openapi_document"]

_PROBLEM = {
    "description": "A Backend.AI problem body",
    "content": {
        "application/problem+json": {
            "schema": {
                "type": "object",
                "required": ["type", "title"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "msg": {"type": "string"},
                    "data": {},
                },
            }
        }
    },
}
_REF = {
    "name": "ref",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "A session's UUID or name",
}
_OWNER = {
    "name": "owner_access_key",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _object_body(required: tuple[str, ...] = (), **properties: str) -> dict[str, Any]:
    """A JSON object body of named, typed properties."""
    typed = {name: {"type": kind} for name, kind in properties.items()}
    schema: dict[str, Any] = {"type": "object", "properties": typed}
    if required:
        schema["required"] = list(required)
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


def _json_object(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


def _op(
    summary: str,
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    ok: str = "200",
    answer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {ok: answer or _json_object("OK"), "4XX": _PROBLEM},
    }
    if body is not None:
        operation["requestBody"] = body
    return operation


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def _query(*names: str) -> list[dict[str, Any]]:
    return [
        {"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in names
    ]


_FOLDER = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "A virtual folder's name or id",
}


def _folder_paths() -> dict[str, Any]:
    """The folders' metadata routes (:mod:`.folders`, :mod:`.folder_sharing`)."""
    done, one = {"description": "Done"}, [_FOLDER]
    by_id = _body(DeleteById)
    return {
        "/folders": {
            "post": _op("Create a folder", body=_body(CreateFolder), ok="201"),
            "get": _op("The folders the caller may see", body=_object_body(all="boolean")),
            "delete": _op(
                "Delete a folder (to the trash) by id", body=by_id, ok="204", answer=done
            ),
        },
        "/folders/_/hosts": {"get": _op("The storage hosts the caller may use")},
        "/folders/_/all_hosts": {"get": _op("Every storage host (superadmin)")},
        "/folders/_/allowed_types": {"get": _op("The folder types (user, group)")},
        "/folders/purge": {"post": _op("Purge a folder in the trash by id", body=by_id)},
        "/folders/restore-from-trash": {"post": _op("Restore a folder by id", body=by_id)},
        "/folders/invitations/list": {"get": _op("The caller's pending invitations")},
        "/folders/invitations/accept": {
            "post": _op("Accept an invitation", body=_body(AcceptInvitation))
        },
        "/folders/invitations/delete": {
            "delete": _op("Reject or cancel an invitation", body=_body(AcceptInvitation))
        },
        "/folders/{name}": {
            "get": _op("A folder's information", params=one),
            "delete": _op("Delete a folder (to the trash)", params=one, ok="204", answer=done),
        },
        "/folders/{name}/rename": {
            "post": _op("Rename a folder", params=one, body=_body(RenameFolder), ok="201")
        },
        "/folders/{name}/update-options": {
            "post": _op("Change permission, cloneable", params=one, body=_body(UpdateOptions))
        },
        "/folders/{name}/restore-from-trash": {
            "post": _op("Restore a folder from the trash", params=one, ok="204", answer=done)
        },
        "/folders/{name}/delete-from-trash": {
            "delete": _op("Purge a folder in the trash", params=one, ok="204", answer=done)
        },
        "/folders/{name}/clone": {
            "post": _op("Clone a folder", params=one, body=_body(CloneFolder), ok="201")
        },
        "/folders/{name}/invite": {
            "post": _op("Invite users by e-mail", params=one, body=_body(InviteUsers), ok="201")
        },
        "/folders/{name}/share": {
            "post": _op("Share with users by e-mail", params=one, body=_body(ShareFolder))
        },
        "/folders/{name}/unshare": {
            "delete": _op("Unshare users by e-mail", params=one, body=_body(UnshareFolder))
        },
        "/folders/{name}/leave": {
            "post": _op("Leave a folder shared with one", params=one, body=_body(LeaveFolder))
        },
    }


_SERVICE = {
    "name": "service_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
    "description": "An endpoint's id (another tenant's answers as a made-up one: 404)",
}
_ROUTE = {
    "name": "route_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


def _services_paths() -> dict[str, Any]:
    """The model-serving routes (:mod:`.services`). The inference proxy itself
    (``/serving/{endpoint_id}/...``, any method, an endpoint token instead of the signature)
    forwards whatever the tenant's model answers, so it is no part of this document."""
    one, both = [_SERVICE], [_SERVICE, _ROUTE]
    success = _json_object("{success: true}")
    return {
        "/services": {
            "post": _op(
                "Create an inference endpoint (replicas of a model folder)",
                body=_body(ServiceCreate),
            ),
            "get": _op("The caller's own live endpoints", params=_query("name")),
        },
        "/services/{service_id}": {
            "get": _op("An endpoint and its routes", params=one),
            "delete": _op("Remove an endpoint (its replicas drained)", params=one, answer=success),
        },
        "/services/{service_id}/scale": {
            "post": _op("Change the number of replicas", params=one, body=_body(ScaleService))
        },
        "/services/{service_id}/sync": {
            "post": _op("Probe and reconcile the endpoint now", params=one, answer=success)
        },
        "/services/{service_id}/token": {
            "post": _op(
                "A token for a private endpoint (duration or valid_until)",
                params=one,
                body=_body(TokenRequest),
            )
        },
        "/services/{service_id}/routings/{route_id}": {
            "put": _op("A route's traffic ratio", params=both, body=_body(TrafficRatio)),
            "delete": _op("Scale down by this route (drained)", params=both, answer=success),
        },
    }


def openapi_document() -> dict[str, Any]:
    one = [_REF, _OWNER]
    no_content = {"description": "Done"}
    paths: dict[str, Any] = {
        "/": {"get": {**_op("The version probe (no signature needed)"), "security": []}},
        "/manager/announcement": {"get": _op("The announcement (never enabled)")},
        "/auth/authorize": {
            "post": {
                **_op(
                    "An active user's e-mail and password for their keypair (no signature)",
                    body=_body(AuthorizeParams),
                ),
                "security": [],
            }
        },
        "/auth/update-password": {
            "post": _op("Change one's own password", body=_body(UpdatePasswordParams))
        },
        "/scaling-groups": {
            "get": _op(
                "The scaling groups the caller may use in a project (non-public ones: admins only)",
                params=_query("group", "group_id", "group_name"),
            )
        },
        "/scaling-groups/{name}/wsproxy-version": {
            "get": _op(
                "The wsproxy version of a scaling group (kernelhub has none: v1)",
                params=[_NAME, *_query("group")],
            )
        },
        "/config/resource-slots": {"get": _op("Every slot type the cluster knows, with its unit")},
        "/auth/role": {
            "get": _op("The caller's global, domain and project roles", params=_query("group"))
        },
        "/manager/status": {
            "get": _op("This manager, its status and its active sessions"),
            "put": _op(
                "Freeze or unfreeze (superadmin); force_kill destroys every live session",
                body=_object_body(("status",), status="string", force_kill="boolean"),
                ok="204",
                answer=no_content,
            ),
        },
        "/session": {
            "post": _op(
                "Create a session, or reuse one by name", body=_body(CreateParams), ok="201"
            )
        },
        "/session/_/match": {
            "get": _op("Sessions whose id or name starts with `id`", params=_query("id"))
        },
        "/session/{ref}": {
            "get": _op("A session's information", params=one),
            "delete": _op("Destroy a session", params=one + _query("forced", "recursive")),
            "patch": _op("Restart a session's kernels", params=one, ok="204", answer=no_content),
            "post": _op(
                "Execute code (query, batch, continue, input, complete)",
                params=one,
                body=_body(ExecuteParams),
            ),
        },
        "/session/{ref}/interrupt": {
            "post": _op("Interrupt the running code", params=one, ok="204", answer=no_content)
        },
        "/session/{ref}/complete": {
            "post": _op(
                "Completions for code",
                params=one,
                body=_object_body(code="string", options="object"),
            )
        },
        "/session/{ref}/download_single": {
            "get": _op("One file's bytes", params=one + _query("file"))
        },
        "/session/{ref}/files": {"get": _op("A directory listing", params=one + _query("path"))},
        "/session/{ref}/logs": {"get": _op("The kernel's log, also after the end", params=one)},
        "/session/{ref}/direct-access-info": {"get": _op("Direct access (none)", params=one)},
        "/session/{ref}/abusing-report": {"get": _op("Abuse reports (none)", params=one)},
        "/resource/presets": {"get": _op("The resource presets")},
        "/resource/recalculate-usage": {"post": _op("Fold occupancy again (superadmin)")},
        "/resource/check-presets": {
            "post": _op(
                "What the caller may still allocate, and which presets fit",
                body=_object_body(group="string", scaling_group="string"),
            )
        },
        "/resource/usage/period": {
            "get": _op(
                "Slot-seconds per 15-minute bin",
                params=_query("start_date", "end_date", "group_id"),
            )
        },
        "/stream/session/{ref}/apps": {"get": _op("The session's apps", params=one)},
        "/session/{ref}/start-service": {
            "post": _op(
                "Start an app's service in the kernel (connections: tcpproxy)",
                params=one,
                body=_object_body(
                    ("app",), app="string", port="integer", envs="string", arguments="string"
                ),
            )
        },
        "/admin/gql": {
            "post": _op(
                "GraphQL: keypair, compute_session(_list)",
                body=_object_body(("query",), query="string", variables="object"),
            )
        },
    }
    paths.update(_folder_paths())
    paths.update(_services_paths())
    return {
        "openapi": "3.0.3",
        "info": {"title": "kernelhub gateway (Backend.AI API)", "version": API_VERSION},
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {
                "BackendAI": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "BackendAI signMethod=HMAC-SHA256, credential=<access key>:"
                    "<signature> (with Date and X-BackendAI-Version headers)",
                }
            }
        },
        "security": [{"BackendAI": []}],
        "paths": paths,
    }
