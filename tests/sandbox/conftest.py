"""Fixtures for the sandbox tests: a real bubblewrap sandbox, cold and through the warm pool."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import pytest
from sandbox_probes import FAST

from keel.sandbox import BubblewrapSandbox, Sandbox, WarmPool

if not sys.platform.startswith("linux"):
    pytest.skip("the bubblewrap sandbox needs Linux", allow_module_level=True)


@pytest.fixture(scope="session")
def backend() -> BubblewrapSandbox:
    """The default backend, with the seccomp filter required (the dev extra installs it)."""
    return BubblewrapSandbox(limits=FAST, seccomp=True)


@pytest.fixture(params=["cold", "warm"])
async def sandbox(
    request: pytest.FixtureRequest, backend: BubblewrapSandbox
) -> AsyncIterator[Sandbox]:
    """Every contract and escape test runs against both ways in: a cold start and the pool."""
    if request.param == "cold":
        yield backend
    else:
        async with WarmPool(backend, size=1) as pool:
            yield pool
