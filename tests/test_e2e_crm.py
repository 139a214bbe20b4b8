"""End to end: a CRM export through a real file tap and Meltano into Closum, and two ephemeral workers.

The export is ``demo/crm_contacts.csv``; ``tap-spreadsheets`` (PyPI) reads it
and the SDK stream maps of meltano.yml shape its columns into the streams
``crm_leads`` and ``crm_unqualified_leads``: no Python glue. Each Meltano
project below is a working copy of its own (meltano.yml and the export in a
temporary folder, its own Meltano system database, ledger and rejects file)
that shares only the plugin venvs ``make test`` installed in ``.meltano/``
(symlinked: nothing is installed during a test).

Two workers (containers), A and B, share nothing but a Meltano S3 state backend
(a ``moto`` server on loopback) and the sandbox:

- A's first load creates the new contacts, matches the ones the sandbox
  already holds (emails differing in case and surrounding spaces), resolves
  city / stage / contact-type / list names to ids (creating the missing contact
  type and list) and rejects the bad rows with their reasons; A then runs
  tap-closum.
- B, with an empty ``.meltano/`` and no ledger, loads the export plus new rows:
  it matches everything A wrote and creates only the new rows; its tap-closum
  run continues from A's bookmark.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from meltano_project import OWN_SETTINGS, ROOT, meltano_env, project_copy, require_plugins, run_meltano

from closum_sandbox.testing import LOOPBACK, free_port, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable

BIN = Path(sys.executable).parent
EXPORT = ROOT / "demo" / "crm_contacts.csv"
PLUGINS = ("tap-spreadsheets", "target-closum", "tap-closum", "target-jsonl")
SUMMARY_METRIC = "closum_load_summary"
MEMBERSHIPS_STREAM = "crm_leads.audience_lists"
# Rows of the export the seeded sandbox (seed 25) already holds: record id → (resource, its id there).
EXISTING = {
    "C-1004": ("lead", 2),
    "C-1005": ("lead", 4),
    "C-1006": ("lead", 11),
    "C-1015": ("unqualified_lead", 3),
}
# Rows that must be rejected, and what the reason says.
REJECTED = {
    "C-1008": "email.email: 'eduardo.sa@exemplo' does not match",
    "C-1009": "needs at least one of: email, phone",
    "C-1010": "field phone: 'ligar depois' is not a valid phone number",
    "C-1011": "city 'Abrantez' not found; did you mean Abrantes?",
    "C-1017": "contact_lifecycle_stage 'Cliente Premium' not found; did you mean Cliente?",
}
# Names in the export that the sandbox lacks: create_missing_references creates them.
NEW_CONTACT_TYPES = ["Distribuidor"]
NEW_AUDIENCE_LISTS = ["Feira de Lisboa 2026"]
# The rows worker B's export has on top of A's.
B_NEW_ROWS = [
    "C-1018,Nuno,Valente,nuno.valente@exemplo.pt,918 000 118,Funchal,Empresa,Lead,VIP",
    "C-1019,Olga,Prates,olga.prates@exemplo.pt,,Ovar,Parceiro,,",
]
# tap-closum reads only the contacts in the two-worker test (Meltano's select, from the environment).
CONTACT_STREAMS = {"TAP_CLOSUM__SELECT": json.dumps(["leads.*", "unqualified_leads.*"])}
RESOURCES_WRITTEN = ("lead", "unqualified_lead", "lead_audience_list", "contact_type", "audience_list")

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def fold(name: str) -> str:
    """A name as a person means it: no accents, case or extra spaces."""
    text = unicodedata.normalize("NFKD", name)
    return " ".join("".join(c for c in text if not unicodedata.combining(c)).casefold().split())


def export_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def list_names(cell: str) -> list[str]:
    return [n.strip() for n in cell.replace(",", ";").split(";") if n.strip()]


def is_lead(row: dict[str, str]) -> bool:
    """The stream maps send rows with a lifecycle stage to crm_leads, the others to crm_unqualified_leads."""
    return bool(row["Lifecycle Stage"].strip())


def load_summaries(output: str) -> dict[str, dict]:
    """Each stream's ``closum_load_summary`` metric in a run's output."""
    decoder = json.JSONDecoder()
    found = {}
    for line in output.splitlines():
        _, marker, rest = line.partition("METRIC: ")
        if not marker:
            continue
        metric, _ = decoder.raw_decode(rest)
        if metric.get("metric") == SUMMARY_METRIC:
            found[metric["value"]["stream"]] = metric["value"]
    return found


def counts(summary: dict) -> tuple[int, int, int, int]:
    return summary["created"], summary["matched"], summary["rejected"], summary["references_created"]


def server_counts(sandbox) -> dict[str, int]:
    return {name: len(sandbox.records(name)) for name in RESOURCES_WRITTEN}


@pytest.fixture(scope="session")
def plugins_installed() -> None:
    """Meltano and the plugins this file runs (``make test`` installs them); fail loudly, never skip."""
    require_plugins(*PLUGINS)


class WorkingCopy:
    """A Meltano project of its own: meltano.yml and the export copied, the plugin venvs shared.

    Meltano keeps its system database (runs, and state unless a state backend
    says otherwise) where ``MELTANO_DATABASE_URI`` says: here, in the copy.
    The target's ledger and rejects file are in the copy too.
    """

    def __init__(self, folder: Path, sandbox, export_lines: list[str], extra_env: dict[str, str] | None = None):
        self.root = project_copy(folder)
        (folder / "demo").mkdir()
        (folder / "output").mkdir()
        (folder / "demo" / "crm_contacts.csv").write_text("\n".join(export_lines) + "\n", encoding="utf-8")
        database = folder / ".meltano" / "meltano.db"
        self.env = meltano_env(sandbox, database, drop=(*OWN_SETTINGS, "AWS_")) | {
            "TARGET_CLOSUM_LEDGER_PATH": str(folder / "output" / "ledger.sqlite"),
            "TARGET_CLOSUM_REJECTS_PATH": str(folder / "output" / "rejects.jsonl"),
            "TARGET_JSONL_DESTINATION_PATH": str(folder / "output"),
            **(extra_env or {}),
        }

    def run(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``meltano --environment=dev <args>`` in this copy (a failed test when it fails)."""
        return run_meltano(self.root, args, self.env | (extra_env or {}))

    def load_export(self, *args: str, extra_env: dict[str, str] | None = None) -> dict[str, dict]:
        """``meltano run tap-spreadsheets target-closum``; the target's summary per stream."""
        # --no-install: a missing plugin fails here, it is never fetched mid-test.
        proc = self.run("run", "--no-install", *args, "tap-spreadsheets", "target-closum", extra_env=extra_env)
        out = proc.stdout + proc.stderr
        summaries = load_summaries(out)
        assert summaries, f"target-closum logged no {SUMMARY_METRIC} metric:\n{out[-3000:]}"
        return summaries

    def rejects(self) -> dict[str, dict]:
        path = Path(self.env["TARGET_CLOSUM_REJECTS_PATH"])
        return {r["record"]["record_id"]: r for r in map(json.loads, path.read_text().splitlines())}

    def jsonl_ids(self, stream: str) -> list[int]:
        lines = (self.root / "output" / f"{stream}.jsonl").read_text().splitlines()
        return sorted(json.loads(line)["id"] for line in lines)


def _by_email(sandbox, resource: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for rec in sandbox.records(resource):
        if rec.get("email"):
            found.setdefault(rec["email"]["email"].strip().casefold(), []).append(rec)
    return found


def _digits(text: str) -> str:
    return "".join(filter(str.isdigit, text))


def _assert_created_as_exported(sandbox, row: dict[str, str], rec: dict) -> None:
    """A record created from an export row: its name, phone, and names resolved to the right ids."""
    assert rec["name"] == f"{row['First Name']} {row['Last Name']}"
    if row["Mobile"]:  # typed as people do (+351 912 000 101, 913 000 102): split as the reference has it
        assert rec["phone"]["extension"] == "00351"
        assert len(rec["phone"]["number"]) == 9
        assert _digits(row["Mobile"]).endswith(rec["phone"]["number"])
    if is_lead(row):
        cities = {fold(c["city_name"]): c["id"] for c in sandbox.records("city")}
        stages = {fold(s["label"]): s["id"] for s in sandbox.records("contact_lifecycle_stage")}
        assert rec["city_id"] == cities[fold(row["City"])]
        assert rec["contact_lifecycle_stage_id"] == stages[fold(row["Lifecycle Stage"])]
    else:
        types = {fold(c["label"]): c["id"] for c in sandbox.records("contact_type")}
        assert rec["contact_type_id"] == types[fold(row["Contact Type"])]


def assert_loaded(sandbox, rows: list[dict[str, str]]) -> dict[str, int]:
    """Every good row is one record on the server, with its names resolved to ids; answers record id → Closum id."""
    lists = {fold(a["name"]): a["id"] for a in sandbox.records("audience_list")}
    memberships = {(m["lead_id"], m["audience_list_id"]) for m in sandbox.records("lead_audience_list")}
    by_email = {resource: _by_email(sandbox, resource) for resource in ("lead", "unqualified_lead")}
    ids = {}
    for row in (r for r in rows if r["Record ID"] not in REJECTED):
        resource = "lead" if is_lead(row) else "unqualified_lead"
        found = by_email[resource].get(row["Email"].strip().casefold(), [])
        assert len(found) == 1, (row["Record ID"], found)  # never created twice
        rec = found[0]
        ids[row["Record ID"]] = rec["id"]
        if row["Record ID"] in EXISTING:
            assert (resource, rec["id"]) == EXISTING[row["Record ID"]]
        else:
            _assert_created_as_exported(sandbox, row, rec)
        # Created or matched, a lead is a member of each list it names.
        for name in list_names(row["Lists"]) if resource == "lead" else []:
            assert (rec["id"], lists[fold(name)]) in memberships, (row["Record ID"], name)
    return ids


def expected_memberships(rows: list[dict[str, str]]) -> int:
    return sum(len(list_names(r["Lists"])) for r in rows if is_lead(r) and r["Record ID"] not in REJECTED)


def first_load_checks(sandbox) -> Callable[[dict[str, dict], WorkingCopy], dict[str, int]]:
    """What the sandbox holds before the export's first load; a check of that load (answers record id → Closum id)."""
    rows = export_rows(EXPORT)
    leads = [r for r in rows if is_lead(r)]
    unqualified = [r for r in rows if not is_lead(r)]
    good_leads = [r for r in leads if r["Record ID"] not in REJECTED]
    good_unqualified = [r for r in unqualified if r["Record ID"] not in REJECTED]
    existing_leads = sum(1 for r in good_leads if r["Record ID"] in EXISTING)
    existing_unqualified = sum(1 for r in good_unqualified if r["Record ID"] in EXISTING)
    assert len(REJECTED) == len(leads) - len(good_leads) + len(unqualified) - len(good_unqualified)
    before = server_counts(sandbox)
    for name in NEW_CONTACT_TYPES:
        assert fold(name) not in {fold(c["label"]) for c in sandbox.records("contact_type")}
    for name in NEW_AUDIENCE_LISTS:
        assert fold(name) not in {fold(a["name"]) for a in sandbox.records("audience_list")}

    def check(first: dict[str, dict], work: WorkingCopy) -> dict[str, int]:
        assert counts(first["crm_leads"]) == (
            len(good_leads) - existing_leads,
            existing_leads,
            len(leads) - len(good_leads),
            len(NEW_AUDIENCE_LISTS),
        )
        assert counts(first["crm_unqualified_leads"]) == (
            len(good_unqualified) - existing_unqualified,
            existing_unqualified,
            0,
            len(NEW_CONTACT_TYPES),
        )
        assert counts(first[MEMBERSHIPS_STREAM]) == (expected_memberships(rows), 0, 0, 0)
        ids = assert_loaded(sandbox, rows)
        assert server_counts(sandbox) == before | {
            "lead": before["lead"] + len(good_leads) - existing_leads,
            "unqualified_lead": before["unqualified_lead"] + len(good_unqualified) - existing_unqualified,
            "lead_audience_list": before["lead_audience_list"] + expected_memberships(rows),
            "contact_type": before["contact_type"] + len(NEW_CONTACT_TYPES),
            "audience_list": before["audience_list"] + len(NEW_AUDIENCE_LISTS),
        }
        rejects = work.rejects()
        assert set(rejects) == set(REJECTED)
        for record_id, reason in REJECTED.items():
            assert reason in rejects[record_id]["message"], rejects[record_id]
        return ids

    return check


@pytest.fixture
def s3_state_backend(tmp_path):
    """A ``moto`` S3 server on a free loopback port with an empty bucket; Meltano's settings to use it."""
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    with (tmp_path / "moto.log").open("w") as log:
        proc = subprocess.Popen(  # our own moto_server, loopback, no shell
            [str(BIN / "moto_server"), "-H", LOOPBACK, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def bucket_made() -> bool:
            try:
                requests.put(f"{url}/closum-state", timeout=5).raise_for_status()
            except requests.ConnectionError:
                return False
            return True

        def exited() -> str | None:
            return None if proc.poll() is None else f"moto_server exited with {proc.returncode}"

        try:
            wait_until(bucket_made, "moto_server to make the bucket", interval=0.1, gone=exited)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}: {(tmp_path / 'moto.log').read_text()}")
        yield (
            url,
            {
                "MELTANO_STATE_BACKEND_URI": "s3://closum-state/meltano",
                "MELTANO_STATE_BACKEND_S3_ENDPOINT_URL": url,
                "MELTANO_STATE_BACKEND_S3_AWS_ACCESS_KEY_ID": "test-key",
                "MELTANO_STATE_BACKEND_S3_AWS_SECRET_ACCESS_KEY": "test-secret",
                "AWS_DEFAULT_REGION": "us-east-1",
                # Nothing of the machine's own AWS setup is read.
                "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
                "AWS_EC2_METADATA_DISABLED": "true",
            },
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.usefixtures("plugins_installed")
def test_two_workers_share_only_the_s3_state_backend(sandbox, s3_state_backend, tmp_path):
    s3_url, backend = s3_state_backend
    lines = EXPORT.read_text(encoding="utf-8").splitlines()
    rows = export_rows(EXPORT)

    # Worker A: loads the export (creating the new contacts, matching those Closum holds, resolving names,
    # creating the missing contact type and list, rejecting the bad rows), then copies the account out.
    check_first_load = first_load_checks(sandbox)
    a = WorkingCopy(tmp_path / "a", sandbox, lines, backend)
    ids_by_a = check_first_load(a.load_export(), a)
    a.run("run", "--no-install", "tap-closum", "target-jsonl", extra_env=CONTACT_STREAMS)
    after_a = server_counts(sandbox)
    written = {f.name for f in (a.root / "output").glob("*.jsonl")} - {"rejects.jsonl"}
    assert written == {"leads.jsonl", "unqualified_leads.jsonl"}  # the select held
    leads_seen_by_a = a.jsonl_ids("leads")
    assert leads_seen_by_a == sorted(r["id"] for r in sandbox.records("lead"))
    keys = requests.get(f"{s3_url}/closum-state", params={"list-type": "2"}, timeout=10).text
    assert "dev:tap-closum-to-target-jsonl/state.json" in keys
    assert "dev:tap-spreadsheets-to-target-closum/state.json" in keys

    # Worker B: another folder, an empty .meltano/ (no system database, no state), no ledger file.
    b = WorkingCopy(tmp_path / "b", sandbox, lines + B_NEW_ROWS, backend)
    assert not (b.root / "output" / "ledger.sqlite").exists()
    assert sorted(p.name for p in (b.root / ".meltano").iterdir()) == ["extractors", "loaders"]
    new_rows = export_rows(b.root / "demo" / "crm_contacts.csv")[len(rows) :]
    summaries = b.load_export()
    good_leads = [r for r in rows if is_lead(r) and r["Record ID"] not in REJECTED]
    good_unqualified = [r for r in rows if not is_lead(r) and r["Record ID"] not in REJECTED]
    new_leads = [r for r in new_rows if is_lead(r)]
    new_unqualified = [r for r in new_rows if not is_lead(r)]
    # Without A's ledger, B matches every row A wrote (and references and memberships) and creates only its own.
    assert counts(summaries["crm_leads"]) == (len(new_leads), len(good_leads), len(REJECTED), 0)
    assert counts(summaries["crm_unqualified_leads"]) == (len(new_unqualified), len(good_unqualified), 0, 0)
    assert counts(summaries[MEMBERSHIPS_STREAM]) == (expected_memberships(new_rows), expected_memberships(rows), 0, 0)
    assert server_counts(sandbox) == after_a | {
        "lead": after_a["lead"] + len(new_leads),
        "unqualified_lead": after_a["unqualified_lead"] + len(new_unqualified),
        "lead_audience_list": after_a["lead_audience_list"] + expected_memberships(new_rows),
    }
    ids = assert_loaded(sandbox, rows + new_rows)
    assert {k: ids[k] for k in ids_by_a} == ids_by_a

    # B's tap-closum starts from A's bookmark (read from S3): only what B created moves.
    b.run("run", "--no-install", "tap-closum", "target-jsonl", extra_env=CONTACT_STREAMS)
    assert b.jsonl_ids("leads") == sorted(ids[r["Record ID"]] for r in new_leads)
    assert b.jsonl_ids("unqualified_leads") == sorted(ids[r["Record ID"]] for r in new_unqualified)
    bookmarks = json.loads(b.run("state", "get", "dev:tap-closum-to-target-jsonl").stdout)["singer_state"]["bookmarks"]
    assert bookmarks["leads"]["replication_key_value"] == max(ids[r["Record ID"]] for r in new_leads)
