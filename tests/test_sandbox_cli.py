"""``closum-sandbox serve`` as a subprocess, and a curl-like session against it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import requests

from closum_sandbox.cli import build_parser, serve_argv
from closum_sandbox.settings import Knobs, Settings
from closum_sandbox.testing import SandboxProcess, SandboxServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli_server(tmp_path):
    log = (tmp_path / "serve.log").open("w+")
    server = SandboxProcess(
        seed=10,
        revision="2019",
        username="me",
        password="s3cret",
        db=tmp_path / "cli.sqlite",
        log=log,
    )
    try:
        server.start(timeout=20)
    except RuntimeError:
        log.seek(0)
        pytest.fail(f"closum-sandbox serve did not start:\n{log.read()}")
    yield server.url, server, log
    server.stop()
    log.close()


def test_cli_session(cli_server):
    url, server, log = cli_server
    api = url + "/api"
    r = requests.post(api + "/token", json={"api_username": "me", "api_pw": "s3cret"}, timeout=5)
    assert r.status_code == 200
    h = {"Authorization": f"Bearer {r.json()['data']['token']}", "Accept": "application/json"}
    listed = requests.get(api + "/email", headers=h, timeout=5).json()
    assert listed["success"] is True
    assert listed["pagination"]["count"] > 0
    rid = requests.post(api + "/email", json={"email": "sylvialhook@closum.com"}, headers=h, timeout=5).json()["data"][
        "id"
    ]
    assert requests.get(f"{api}/email/{rid}", headers=h, timeout=5).json()["data"]["email"] == "sylvialhook@closum.com"
    r = requests.put(
        f"{api}/email/{rid}", json={"id": rid, "email": "update.sylvialhook@closum.com"}, headers=h, timeout=5
    )
    assert r.json() == {"success": True, "data": []}
    assert (
        requests.get(f"{api}/email/{rid}", headers=h, timeout=5).json()["data"]["email"]
        == "update.sylvialhook@closum.com"
    )
    assert requests.get(api + "/audience-list", headers=h, timeout=5).status_code == 404  # --revision 2019
    server.stop()
    log.seek(0)
    out = log.read()
    assert "s3cret" not in out
    assert h["Authorization"][7:] not in out
    assert "GET /api/email" not in out  # access log is off by default


def test_cli_parser_defaults_and_help():
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.db, args.seed, args.revision) == ("127.0.0.1", 8080, None, 25, "both")
    assert (args.username, args.password, args.token_ttl) == ("sandbox", "sandbox", 3600)
    assert (args.latency_ms, args.fail_rate, args.rate_limit, args.max_page_size, args.fault_seed) == (0, 0, 0, 1000, 0)
    assert args.access_log is False
    assert args.opt_ins_on_retrieve is True
    assert build_parser().parse_args(["serve", "--no-opt-ins-on-retrieve"]).opt_ins_on_retrieve is False
    help_text = subprocess.run(
        [sys.executable, "-m", "closum_sandbox.cli", "serve", "--help"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in (
        "--host",
        "--port",
        "--db",
        "--seed",
        "--revision",
        "--username",
        "--password",
        "--token-ttl",
        "--latency-ms",
        "--fail-rate",
        "--rate-limit",
        "--max-page-size",
        "--fault-seed",
        "--access-log",
        "--no-opt-ins-on-retrieve",
    ):
        assert flag in help_text


def test_cli_rejects_bad_revision():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--revision", "2020"])


def test_defaults_come_from_settings():
    args = build_parser().parse_args(["serve"])
    assert {f.name: getattr(args, f.name) for f in fields(Settings)} == asdict(Settings())
    assert set(Knobs.__annotations__) <= {f.name for f in fields(Settings)}
    server = SandboxServer(seed=3)
    assert asdict(server.settings) == asdict(Settings(host="127.0.0.1", port=0, seed=3))


def test_serve_argv_round_trips_through_the_parser():
    knobs = {"port": 0, "db": "x.sqlite", "seed": 3, "fail_rate": 0.25, "opt_ins_on_retrieve": False}
    assert serve_argv(opt_ins_on_retrieve=True, max_page_size=7) == [
        "serve",
        "--opt-ins-on-retrieve",
        "--max-page-size",
        "7",
    ]
    args = build_parser().parse_args(serve_argv(**knobs))
    assert {name: getattr(args, name) for name in knobs} == knobs
    assert args.max_page_size == Settings().max_page_size


def test_process_passes_its_knobs(tmp_path):
    with (
        (tmp_path / "serve.log").open("w") as log,
        SandboxProcess(
            seed=0, max_page_size=7, token_ttl=5, fail_rate=0.25, opt_ins_on_retrieve=False, log=log
        ) as server,
    ):
        config = requests.get(server.url + "/_admin/config", timeout=5).json()
    assert config["opt_ins_on_retrieve"] is False
    assert (config["seed"], config["max_page_size"], config["token_ttl"], config["fail_rate"]) == (0, 7, 5, 0.25)
    assert (config["revision"], config["username"], config["latency_ms"]) == ("both", "sandbox", 0)


# What `pip install closum-singer` (without [sandbox]) leaves out: simulated by blocking the imports.
WITHOUT_EXTRA = (
    "import sys\n"
    "sys.modules['uvicorn'] = sys.modules['fastapi'] = None  # not installed\n"
    "from closum_sandbox.cli import main\n"
    "raise SystemExit(main())\n"
)


@pytest.mark.parametrize("args", [["serve"], ["serve", "--port", "0", "--seed", "3"]], ids=" ".join)
def test_without_the_sandbox_extra_one_line_names_the_extra_to_install(args):
    proc = subprocess.run(  # argv is ours, no shell
        [sys.executable, "-c", WITHOUT_EXTRA, *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )
    assert proc.returncode == 1
    expected = (
        "closum-sandbox: the sandbox needs the [sandbox] extra (uvicorn is not installed); "
        "install it with: pip install 'closum-singer[sandbox]'"
    )
    assert proc.stderr.splitlines() == [expected]
    assert proc.stdout == ""
    helped = subprocess.run(  # argv is ours, no shell
        [sys.executable, "-c", WITHOUT_EXTRA, "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert helped.returncode == 0, helped.stderr
    assert "--rate-limit" in helped.stdout
