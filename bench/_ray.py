"""The local Ray every Ray-backed benchmark runs on: this machine's 2 CPUs, bound to
loopback, quiet (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` must be set before Ray is
imported; each benchmark does so first)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["local_ray"]


@contextmanager
def local_ray() -> Iterator[None]:
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=256 * 2**20,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        yield
    finally:
        ray.shutdown()
