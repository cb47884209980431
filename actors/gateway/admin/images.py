"""Images and their aliases in the admin GraphQL schema: what ``backend.ai admin image ...``
sends (23.03's ``images``, ``image``, ``alias_image``, ``dealias_image``,
``rescan_images``), and kernelhub's ``register_image``.

Everyone may list the catalogue (23.03 lists every image to a superadmin and the images of
allowed registries to others; kernelhub's images are local to its agents, so every one is
allowed). Writes are a superadmin's. kernelhub has no registry to rescan: ``rescan_images``
is refused with a 400 that says how images are registered (``register_image``, which is
kernelhub's and not 23.03's: there images come from a registry scan). ``forget_image`` is
refused too: the catalogue has no removal event yet. ``is_installed`` is refused when given:
kernelhub does not track which agents hold an image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...domain.commands.tenancy import RegisterImage, RemoveAlias, SetAlias
from ...domain.errors import GenericBadRequest, ImageNotFound, InvalidAPIParameters, ObjectNotFound
from .base import AdminArea, AdminCall, Resolvers
from .infra_rules import decode_json_object, image_view, is_operation_image
from .roles import require_superadmin

__all__ = ["AREA", "REGISTER_HINT"]

REGISTER_HINT = (
    "images are registered with the admin GraphQL mutation register_image(reference, "
    "architecture, labels) (`kh admin image register`), and `kh up` registers its base image"
)

_SDL = """
type ImageLabel { key: String value: String }
type ImageResourceLimit { key: String min: String max: String }

type Image {
  name: String humanized_name: String tag: String registry: String architecture: String
  is_local: Boolean digest: String labels: [ImageLabel] aliases: [String] size_bytes: BigInt
  resource_limits: [ImageResourceLimit] supported_accelerators: [String] reference: String
}

type ImageMutationResult { ok: Boolean msg: String }
type RescanImages { ok: Boolean msg: String task_id: String }

extend type Query {
  image(reference: String!, architecture: String): Image
  images(is_installed: Boolean, is_operation: Boolean): [Image]
}

extend type Mutation {
  alias_image(alias: String!, target: String!, architecture: String): ImageMutationResult
  dealias_image(alias: String!, architecture: String): ImageMutationResult
  rescan_images(registry: String): RescanImages
  forget_image(reference: String!, architecture: String): ImageMutationResult
  register_image(
    reference: String!, architecture: String, labels: JSONString, digest: String
  ): ImageMutationResult
}
"""

_OK = {"ok": True, "msg": "success"}


def _labels(raw: Any) -> dict[str, str]:
    labels = decode_json_object("labels", raw) or {}
    wrong = sorted(k for k, v in labels.items() if not isinstance(v, str))
    if wrong:
        raise InvalidAPIParameters(f"labels: the value of {', '.join(wrong)} must be a string")
    return labels


def _resolvers(call: AdminCall) -> Resolvers:
    lookups = call.ctx.lookups
    caller = call.caller

    async def aliases_of() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for record in await lookups.every("alias"):
            found.setdefault(str(record.get("target")), []).append(str(record.get("alias")))
        return found

    async def canonical(reference: str) -> Mapping[str, Any] | None:
        """The catalogue's record of ``reference`` only if it is a canonical name."""
        record = await lookups.image(reference)
        return record if record is not None and record.get("name") == reference else None

    # ---- queries ------------------------------------------------------------------------
    async def image(
        _info: Any, reference: str, architecture: str | None = None
    ) -> dict[str, Any] | None:
        record = await lookups.image(reference)
        if record is None or (
            architecture and record.get("architecture", "x86_64") != architecture
        ):
            raise ImageNotFound(f"{reference!r} ({architecture or 'any architecture'})")
        aliases = (await aliases_of()).get(str(record["name"]), [])
        return image_view(record, aliases)

    async def images(
        _info: Any, is_installed: bool | None = None, is_operation: bool | None = None
    ) -> list[dict[str, Any]]:
        if is_installed is not None:
            raise InvalidAPIParameters(
                "is_installed: kernelhub does not track which agents hold an image"
            )
        aliases = await aliases_of()
        records = sorted(await lookups.every("image"), key=lambda r: str(r.get("name")))
        if is_operation is not None:
            records = [r for r in records if is_operation_image(r) == is_operation]
        return [image_view(r, aliases.get(str(r.get("name")), [])) for r in records]

    # ---- mutations ----------------------------------------------------------------------
    async def alias_image(
        _info: Any, alias: str, target: str, architecture: str | None = None
    ) -> dict[str, Any]:
        require_superadmin(caller, "alias an image")
        if not alias.strip():
            raise InvalidAPIParameters("alias: must not be empty")
        record = await lookups.image(target)
        if record is None:
            raise ImageNotFound(f"alias target {target!r} is not in the image catalogue")
        if architecture and record.get("architecture", "x86_64") != architecture:
            raise ImageNotFound(f"{target!r} is not catalogued for {architecture}")
        if await canonical(alias) is not None:
            raise GenericBadRequest(f"{alias!r} is an image's own name, not an alias")
        named = await lookups.image(alias)
        if named is not None and named.get("name") != record["name"]:
            raise GenericBadRequest(
                f"alias {alias!r} already names {named.get('name')!r}: dealias it first"
            )
        await call.tenancy(SetAlias(alias=alias, target=str(record["name"])))
        return dict(_OK)

    async def dealias_image(
        _info: Any, alias: str, architecture: str | None = None
    ) -> dict[str, Any]:
        require_superadmin(caller, "remove an image alias")
        if await canonical(alias) is not None or await lookups.image(alias) is None:
            raise ObjectNotFound("image alias", f"there is no alias {alias!r}")
        await call.tenancy(RemoveAlias(alias=alias))
        return dict(_OK)

    async def rescan_images(_info: Any, registry: str | None = None) -> dict[str, Any]:
        require_superadmin(caller, "rescan image registries")
        raise GenericBadRequest(
            f"kernelhub has no image registry to rescan{f' ({registry!r})' if registry else ''}:"
            f" {REGISTER_HINT}"
        )

    async def forget_image(
        _info: Any, reference: str, architecture: str | None = None
    ) -> dict[str, Any]:
        require_superadmin(caller, "forget an image")
        raise GenericBadRequest(
            "kernelhub cannot forget a catalogued image yet (the catalogue has no removal "
            "event); remove its aliases with dealias_image"
        )

    async def register_image(
        _info: Any,
        reference: str,
        architecture: str | None = None,
        labels: Any = None,
        digest: str | None = None,
    ) -> dict[str, Any]:
        require_superadmin(caller, "register an image")
        if not reference.strip() or any(c.isspace() for c in reference):
            raise InvalidAPIParameters(f"reference: {reference!r} is not an image reference")
        if await lookups.image(reference) is not None and await canonical(reference) is None:
            raise GenericBadRequest(f"{reference!r} is an alias: dealias it first")
        await call.tenancy(
            RegisterImage(
                name=reference,
                labels=_labels(labels),
                architecture=architecture or "x86_64",
                digest=digest or "",
            )
        )
        return dict(_OK)

    return {
        "image": image,
        "images": images,
        "alias_image": alias_image,
        "dealias_image": dealias_image,
        "rescan_images": rescan_images,
        "forget_image": forget_image,
        "register_image": register_image,
    }


AREA = AdminArea("images", sdl=_SDL, resolvers=_resolvers)
