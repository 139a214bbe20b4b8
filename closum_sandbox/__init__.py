"""closum-sandbox: a local Closum-compatible API server (see README.md).

- :mod:`closum_sandbox.cli`: ``closum-sandbox serve`` (argparse).
- :mod:`closum_sandbox.app`: ``create_app(settings)``, routes from the registry.
- :mod:`closum_sandbox.store`: SQLite storage, sorting, paging, record shapes.
- :mod:`closum_sandbox.seed`: deterministic realistic Portuguese data.
- :mod:`closum_sandbox.faults`: latency, fail rate, rate limit, scripted faults.
- :mod:`closum_sandbox.admin`: the ``/_admin`` routes.
- :mod:`closum_sandbox.auth`: bearer tokens.
- :mod:`closum_sandbox.settings`: the knobs.
- :mod:`closum_sandbox.testing`: ``SandboxServer``, an in-process server for tests.
- :mod:`closum_sandbox.pytest_plugin`: the ``sandbox`` and ``sandbox_factory`` fixtures.
"""
