"""The environment user code sees (docs/kernel-environment.md): the agent's variables
(``BACKENDAI_*``, ``KERNELHUB_*``), ``/home/config/environ.txt`` merged in,
``LANG``/``HOME``/``TERM`` fixed, ``PATH`` and ``SHELL`` filled in when missing,
``~/.local/bin`` first on ``PATH``."""

from __future__ import annotations

import os
from typing import Mapping

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def read_environ_file(path: str) -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        with open(path) as environ:
            for line in environ:
                key, sep, value = line.rstrip("\n").partition("=")
                if sep and key.strip():
                    found[key.strip()] = value
    except OSError:
        pass
    return found


def child_environ(
    base: Mapping[str, str], home: str, environ_file: str | None = None
) -> dict[str, str]:
    env = dict(base)
    if environ_file:
        env.update(read_environ_file(environ_file))
    env["LANG"] = "C.UTF-8"
    env["HOME"] = home
    env["TERM"] = "xterm"
    env.setdefault("PATH", _DEFAULT_PATH)
    if "SHELL" not in env:
        env["SHELL"] = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/ash"
    promoted = [
        p
        for p in (
            os.path.join(home, ".local", "bin"),
            "/home/linuxbrew/.linuxbrew/bin",
            "/usr/local/nvidia/bin",
            "/usr/local/cuda/bin",
        )
        if os.path.isdir(p)
    ]
    rest = [p for p in env["PATH"].split(":") if p and p not in promoted]
    env["PATH"] = ":".join(promoted + rest)
    return env
