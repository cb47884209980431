"""Resource presets in the admin GraphQL schema (23.03's ``resource_preset(name)``,
``resource_presets`` and create / modify / delete): the named sizes ``GET /resource/presets``
and ``POST /resource/check-presets`` offer.

The 23.3.12 client reads presets over REST only; these fields are for ``kh admin`` and web
UIs. Everyone reads them (as the REST listing); only a superadmin writes. A preset is set
whole (``SetPreset``): a modify overlays the given fields on the current record.
``shared_memory`` is taken as a size (``"64m"``) and shown in bytes (``BigInt``);
``scaling_group_name`` (a later Backend.AI field) ties a preset to one scaling group.
"""

from __future__ import annotations

import json
from typing import Any

from ...domain.commands.tenancy import DeletePreset, SetPreset
from ...domain.errors import InvalidAPIParameters, ObjectNotFound
from .base import AdminArea, AdminCall, Resolvers
from .keys_rules import bytes_of, shared_memory, slots
from .roles import require_superadmin

__all__ = ["AREA", "preset_view"]

_SDL = """
type ResourcePreset {
  name: String resource_slots: JSONString shared_memory: BigInt scaling_group_name: String
}

input CreateResourcePresetInput {
  resource_slots: JSONString! shared_memory: String scaling_group_name: String
}
input ModifyResourcePresetInput {
  resource_slots: JSONString shared_memory: String scaling_group_name: String
}

type CreateResourcePreset { ok: Boolean msg: String resource_preset: ResourcePreset }
type ModifyResourcePreset { ok: Boolean msg: String }
type DeleteResourcePreset { ok: Boolean msg: String }

extend type Query {
  resource_preset(name: String!): ResourcePreset
  resource_presets: [ResourcePreset]
}

extend type Mutation {
  create_resource_preset(name: String!, props: CreateResourcePresetInput!): CreateResourcePreset
  modify_resource_preset(name: String!, props: ModifyResourcePresetInput!): ModifyResourcePreset
  delete_resource_preset(name: String!): DeleteResourcePreset
}
"""


def preset_view(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": record.get("name"),
        "resource_slots": json.dumps(record.get("resource_slots") or {}),
        "shared_memory": bytes_of(record.get("shared_memory")),
        "scaling_group_name": record.get("scaling_group_name"),
    }


class _Presets:
    def __init__(self, call: AdminCall) -> None:
        self.call = call
        self.lookups = call.ctx.lookups

    async def resource_preset(self, _info: Any, name: str) -> dict[str, Any] | None:
        found = [p for p in await self.lookups.presets() if p.get("name") == name]
        return preset_view(dict(found[0])) if found else None

    async def resource_presets(self, _info: Any) -> list[dict[str, Any]]:
        records = sorted(await self.lookups.presets(), key=lambda p: str(p.get("name")))
        return [preset_view(dict(p)) for p in records]

    async def _changes(self, props: dict[str, Any]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if props.get("resource_slots") is not None:
            changes["resource_slots"] = slots(props["resource_slots"], "resource_slots")
        if props.get("shared_memory") is not None:
            changes["shared_memory"] = shared_memory(props["shared_memory"])
        group = props.get("scaling_group_name")
        if group is not None:
            if await self.lookups.scaling_group(str(group)) is None:
                raise ObjectNotFound("scaling group", f"scaling group {group!r} does not exist")
            changes["scaling_group_name"] = str(group)
        return changes

    async def _current(self, name: str) -> dict[str, Any] | None:
        found = [p for p in await self.lookups.presets() if p.get("name") == name]
        return dict(found[0]) if found else None

    async def create_resource_preset(
        self, _info: Any, name: str, props: dict[str, Any]
    ) -> dict[str, Any]:
        require_superadmin(self.call.caller, "create resource presets")
        changes = await self._changes(props)
        if await self._current(name) is not None:
            raise InvalidAPIParameters(f"resource preset {name!r} already exists")
        await self.call.tenancy(SetPreset(name=name, **changes))
        record = await self._current(name) or {"name": name, **changes}
        return {"ok": True, "msg": "success", "resource_preset": preset_view(record)}

    async def modify_resource_preset(
        self, _info: Any, name: str, props: dict[str, Any]
    ) -> dict[str, Any]:
        require_superadmin(self.call.caller, "modify resource presets")
        changes = await self._changes(props)
        current = await self._current(name)
        if current is None:
            raise ObjectNotFound("resource preset", f"resource preset {name!r} does not exist")
        whole = {
            "resource_slots": current.get("resource_slots") or {},
            "shared_memory": current.get("shared_memory"),
            "scaling_group_name": current.get("scaling_group_name"),
        }
        await self.call.tenancy(SetPreset(name=name, **{**whole, **changes}))
        return {"ok": True, "msg": "success"}

    async def delete_resource_preset(self, _info: Any, name: str) -> dict[str, Any]:
        require_superadmin(self.call.caller, "delete resource presets")
        if await self._current(name) is None:
            raise ObjectNotFound("resource preset", f"resource preset {name!r} does not exist")
        await self.call.tenancy(DeletePreset(name=name))
        return {"ok": True, "msg": "success"}


def _resolvers(call: AdminCall) -> Resolvers:
    area = _Presets(call)
    return {
        "resource_preset": area.resource_preset,
        "resource_presets": area.resource_presets,
        "create_resource_preset": area.create_resource_preset,
        "modify_resource_preset": area.modify_resource_preset,
        "delete_resource_preset": area.delete_resource_preset,
    }


AREA = AdminArea("presets", sdl=_SDL, resolvers=_resolvers)
