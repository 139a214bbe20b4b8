"""Pytest fixtures for the sandbox.

Enable them with ``pytest_plugins = ["closum_sandbox.pytest_plugin"]``.

- ``sandbox``: a fresh, seeded, in-memory :class:`SandboxServer` with default
  knobs, per test.
- ``sandbox_factory``: call it with :class:`SandboxServer` keyword arguments
  (:class:`~closum_sandbox.settings.Knobs`, defaulting to the
  :class:`~closum_sandbox.settings.Settings` defaults) to get started servers;
  all are stopped at teardown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from closum_sandbox.testing import SandboxServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from typing_extensions import Unpack

    from closum_sandbox.settings import Knobs


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., SandboxServer]]:
    """Start sandbox servers on demand; stop them all at teardown.

    Yields:
        A function taking :class:`SandboxServer` keyword arguments and answering a started server.
    """
    servers: list[SandboxServer] = []

    def make(*, db: str | Path | None = None, **knobs: Unpack[Knobs]) -> SandboxServer:
        server = SandboxServer(db=db, **knobs)
        servers.append(server)
        return server.start()

    yield make
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def sandbox(sandbox_factory: Callable[..., SandboxServer]) -> SandboxServer:
    """A started sandbox with default knobs.

    Args:
        sandbox_factory: the fixture that starts it.

    Returns:
        The server.
    """
    return sandbox_factory()
