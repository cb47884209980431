"""The first tenancy of a fresh installation, created idempotently by ``kh up``.

A default domain, project, scaling group (associated with the domain), resource policy, the
base image with its ``python`` alias, and a superadmin user with an admin keypair. Every
step has a fixed command id and decides "nothing to do" when its result already exists, so
running it again appends nothing and hands back the same keypair.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from actors.domain.commands.tenancy import (
    AddMember,
    Associate,
    CreateDomain,
    CreateProject,
    CreateUser,
    IssueKeypair,
    RegisterImage,
    SetAlias,
    SetPolicy,
    SetScalingGroup,
    UpdateDomain,
)
from actors.domain.vfolders import ALL_HOST_PERMISSIONS, DEFAULT_HOST
from actors.tenancy.writer import TenancyService
from events import RedisEventStore
from events.secrets import SecretBox

__all__ = ["BASE_IMAGE", "BASE_IMAGE_LABELS", "Bootstrap", "bootstrap", "write_client_config"]

NAMESPACE = uuid.UUID("6d1f3c52-8b0e-4f55-9a47-0c2e7b1d9f30")
ADMIN_RATE_LIMIT = 30_000
"""Requests per 15 minutes for the admin keypair (Backend.AI's example admin keypair's)."""
BASE_IMAGE = "kernelhub/python:3.11"
BASE_IMAGE_LABELS = {
    "ai.backend.kernelspec": "1",
    "ai.backend.features": "batch query uid-match",
    "ai.backend.base-distro": "debian12",
    "ai.backend.runtime-type": "python",
    "ai.backend.runtime-path": "/usr/bin/python3",
    "ai.backend.role": "COMPUTE",
    "ai.backend.resource.min.cpu": "1",
    "ai.backend.resource.min.mem": "256m",
    "ai.backend.service-ports": "",
}


@dataclass(frozen=True)
class Bootstrap:
    access_key: str
    secret_key: str
    user_id: uuid.UUID
    project_id: uuid.UUID


def _step(name: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, name)


async def bootstrap(store: RedisEventStore, secret_box: SecretBox) -> Bootstrap:
    tenancy = await TenancyService(store, secret_box, actor="bootstrap").load()
    if "default" not in tenancy.state.domains:  # an admin may have changed it since: kept
        await tenancy.handle(
            CreateDomain(
                name="default", description="the default domain", command_id=_step("domain")
            )
        )
    await tenancy.handle(SetPolicy(name="default", command_id=_step("policy")))
    await tenancy.handle(  # once per installation: an admin's later change stays
        UpdateDomain(
            name="default",
            allowed_vfolder_hosts={DEFAULT_HOST: sorted(ALL_HOST_PERMISSIONS)},
            command_id=_step("domain-vfolder-hosts"),
        )
    )
    await tenancy.handle(
        SetScalingGroup(  # inference too: the embedded pool serves models out of the box
            name="default",
            description="the embedded agent pool",
            allowed_session_types=["interactive", "batch", "inference"],
            command_id=_step("sgroup"),
        )
    )
    await tenancy.handle(
        Associate(
            name="default",
            target_kind="domain",
            target="default",
            command_id=_step("sgroup-domain"),
        )
    )
    project = _step("project")
    if str(project) not in tenancy.state.projects:  # created once; later edits are kept
        project = await tenancy.handle(
            CreateProject(
                name="default",
                domain="default",
                project_id=project,
                command_id=_step("project"),
            )
        )
    user = _step("admin")
    if str(user) not in tenancy.state.users:
        user = await tenancy.handle(
            CreateUser(
                username="admin",
                email="admin@kernelhub.local",
                domain="default",
                user_id=user,
                role="superadmin",
                command_id=_step("admin"),
            )
        )
    await tenancy.handle(
        AddMember(project_id=project, user_id=user, command_id=_step("admin-member"))
    )
    await tenancy.handle(
        RegisterImage(name=BASE_IMAGE, labels=BASE_IMAGE_LABELS, command_id=_step("image"))
    )
    await tenancy.handle(
        SetAlias(alias="python", target=BASE_IMAGE, command_id=_step("image-alias"))
    )
    active = [k for k in tenancy.keypairs_of(user) if k.get("is_active") and k.get("is_admin")]
    if active:
        keypair = active[0]
        return Bootstrap(
            keypair["access_key"], secret_box.decrypt(keypair["secret_key"]), user, project
        )
    issued = len(tenancy.keypairs_of(user))
    access_key, secret_key = await tenancy.handle(
        IssueKeypair(
            user_id=user,
            is_admin=True,
            rate_limit=ADMIN_RATE_LIMIT,
            command_id=_step(f"admin-keypair-{issued}"),
        )
    )
    return Bootstrap(access_key, secret_key, user, project)


def write_client_config(path: Path, result: Bootstrap, endpoint: str | None = None) -> None:
    """The admin keypair for the SDK/CLI, readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# written by `kh up`: the admin keypair of this kernelhub installation",
        f'access_key = "{result.access_key}"',
        f'secret_key = "{result.secret_key}"',
    ]
    if endpoint:
        lines.append(f'endpoint = "{endpoint}"')
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
