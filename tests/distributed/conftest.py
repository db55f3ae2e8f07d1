"""A real Ray head on loopback, started once per test session by this process
(``keel.distributed.local_head.LocalRayHead``) and stopped by its own process ids, never by
``ray stop``, which ends every Ray process on the machine."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Read by Ray when it is imported: keeps this driver, like the head, on 127.0.0.1.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# Like LocalRayHead's head: no token authentication, even when ~/.ray/auth_token exists (Ray
# turns it on by itself then, and a head and a driver that disagree fail with InvalidAuthToken).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Ray is imported before the test modules load other C++ extensions (usearch): loaded after them,
# ray.init aborts with std::regex_error in this process.
with contextlib.suppress(ImportError):
    import ray  # noqa: F401


@dataclass(frozen=True)
class RayHead:
    address: str
    """The GCS address, ``127.0.0.1:PORT``."""
    client_address: str
    """The Ray Client address, ``ray://127.0.0.1:PORT``."""
    env: dict[str, str]


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    ray = pytest.importorskip("ray", reason="Ray tests need the ray extra: pip install 'keel[ray]'")
    from keel.distributed.local_head import LocalRayHead

    # The workers import this directory's test modules by name, as they would an installed package.
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)
    with LocalRayHead(num_cpus=2, extra_env={"PYTHONPATH": path}) as head:
        options = {"_node_ip_address": "127.0.0.1", "namespace": "keel", "log_to_driver": False}
        ray.init(address=head.address, **options)
        try:
            yield RayHead(head.address, head.client_address, head.env())
        finally:
            ray.shutdown()
