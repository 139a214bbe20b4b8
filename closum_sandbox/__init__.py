"""closum-sandbox: a local Closum-compatible API server (see README.md).

- :mod:`closum_sandbox.cli`: ``closum-sandbox serve`` (argparse).
- :mod:`closum_sandbox.app`: ``create_app(settings)``, the ``/api`` routes from the registry.
- :mod:`closum_sandbox.admin`: the ``/_admin`` routes.
- :mod:`closum_sandbox.state`: ``Sandbox``, one server's state, shared by both route modules.
- :mod:`closum_sandbox.responses`: ``ApiError`` and the envelope responses both route modules answer with.
- :mod:`closum_sandbox.store`: SQLite storage, sorting, paging, record shapes.
- :mod:`closum_sandbox.seed`: deterministic realistic Portuguese data.
- :mod:`closum_sandbox.faults`: latency, fail rate, rate limit, scripted faults.
- :mod:`closum_sandbox.auth`: bearer tokens.
- :mod:`closum_sandbox.settings`: the knobs and their defaults (the only place they are written).
- :mod:`closum_sandbox.testing`: ``SandboxServer`` (in-process, for tests) and ``SandboxProcess`` (a child process).
- :mod:`closum_sandbox.pytest_plugin`: the ``sandbox`` and ``sandbox_factory`` fixtures.
"""
