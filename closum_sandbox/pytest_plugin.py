"""Pytest fixtures for the sandbox (enable with
``pytest_plugins = ["closum_sandbox.pytest_plugin"]``).

- ``sandbox``: a fresh, seeded, in-memory :class:`SandboxServer` with default
  knobs, per test.
- ``sandbox_factory``: call it with :class:`SandboxServer` keyword arguments
  to get started servers; all are stopped at teardown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from closum_sandbox.testing import SandboxServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., SandboxServer]]:
    servers: list[SandboxServer] = []

    def make(**kwargs) -> SandboxServer:
        server = SandboxServer(**kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def sandbox(sandbox_factory) -> SandboxServer:
    return sandbox_factory()
