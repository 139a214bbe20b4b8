"""Sandbox hardening: the body-size limit, the admin token, the warning on a non-loopback address."""

from __future__ import annotations

import logging
import socket
import time

import pytest
import requests

from closum_sandbox import cli
from closum_sandbox.guard import is_loopback
from closum_sandbox.settings import Settings
from closum_sandbox.testing import SandboxProcess, SandboxServer

LIMIT = 2048


@pytest.fixture(scope="module")
def small():
    with SandboxServer(seed=2, max_body_bytes=LIMIT) as server:
        yield server


def _assert_413(response: requests.Response) -> None:
    assert response.status_code == 413
    body = response.json()
    assert body["success"] is False
    assert f"larger than {LIMIT} bytes" in body["message"]


@pytest.mark.parametrize("path", ["/api/token", "/api/lead", "/_admin/reset"])
def test_a_body_over_the_limit_is_answered_413_on_every_route(small, path):
    big = b'{"api_username": "' + b"x" * LIMIT + b'"}'
    _assert_413(requests.post(small.url + path, data=big, headers={"Content-Type": "application/json"}, timeout=10))


def test_a_body_at_the_limit_is_served_as_usual(small):
    body = b'{"api_username": "sandbox", "api_pw": "wrong"}'
    body += b" " * (LIMIT - len(body))
    r = requests.post(small.url + "/api/token", data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 401


def test_a_streamed_body_over_the_limit_is_answered_413(small):
    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    _assert_413(requests.post(small.url + "/api/token", data=chunks(), timeout=10))  # chunked: no Content-Length


def test_a_large_declared_body_is_refused_before_it_is_read(small):
    # 50 MB announced, 10 bytes sent: a server reading the body would wait for the rest.
    with socket.create_connection(("127.0.0.1", small.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 52428800\r\n\r\n{"api_use'
        )
        start = time.monotonic()
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")
    assert time.monotonic() - start < 2


def test_the_default_limit_is_one_mebibyte_and_the_cli_sets_it():
    assert Settings().max_body_bytes == 1024 * 1024
    args = cli.build_parser().parse_args(["serve", "--max-body-bytes", "500"])
    assert args.max_body_bytes == 500
    with pytest.raises(ValueError, match="max_body_bytes"):
        Settings(max_body_bytes=0)


def test_the_process_takes_the_limit_and_the_admin_token(tmp_path):
    with (
        (tmp_path / "serve.log").open("w") as log,
        SandboxProcess(seed=0, max_body_bytes=100, admin_token="pr0cess-t0ken", log=log) as server,
    ):
        assert requests.get(server.url + "/_admin/config", timeout=5).status_code == 401
        config = server.configure()  # the helpers send the token
        assert config["max_body_bytes"] == 100
        assert "admin_token" not in config
        r = requests.post(server.api_url + "/token", data=b"x" * 101, timeout=5)
        assert r.status_code == 413


# -- the admin token --------------------------------------------------------------------------
TOKEN = "adm1n-t0ken-for-tests"


@pytest.fixture(scope="module")
def guarded():
    with SandboxServer(seed=2, admin_token=TOKEN) as server:
        yield server


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/config"), ("PATCH", "/config"), ("GET", "/requests"), ("POST", "/reset"), ("GET", "/records/lead")],
)
def test_with_an_admin_token_the_admin_routes_refuse_requests_without_it(guarded, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Admin-Token": "wrong"}, {"Authorization": TOKEN}):
        r = requests.request(method, guarded.url + "/_admin" + path, headers=headers, json={}, timeout=5)
        assert r.status_code == 401, headers
        assert r.json()["success"] is False
        assert "admin token" in r.json()["message"]
        assert r.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {TOKEN}"}, {"X-Admin-Token": TOKEN}], ids=str)
def test_with_an_admin_token_the_admin_routes_serve_requests_with_it(guarded, headers):
    r = requests.get(guarded.url + "/_admin/config", headers=headers, timeout=5)
    assert r.status_code == 200
    assert TOKEN not in r.text


def test_health_and_the_api_stay_open_and_the_helpers_send_the_token(guarded):
    assert requests.get(guarded.url + "/_admin/health", timeout=5).status_code == 200
    assert guarded.token()  # the API itself is unchanged
    assert guarded.records("lead")  # SandboxAdmin sends the token
    assert "admin_token" not in guarded.configure()


def test_without_an_admin_token_the_admin_routes_stay_open(small):
    assert requests.get(small.url + "/_admin/config", timeout=5).status_code == 200


# -- listening beyond loopback ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("::", False)],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("argv", "warned"),
    [
        (["--host", "0.0.0.0"], "are open; set --admin-token"),
        (["--host", "0.0.0.0", "--admin-token", "t"], "admin routes need --admin-token"),
        (["--host", "127.0.0.1"], None),
    ],
)
def test_serve_warns_when_listening_beyond_loopback(monkeypatch, caplog, argv, warned):
    served = []
    monkeypatch.setattr(cli.uvicorn, "run", lambda _app, **kw: served.append(kw["host"]))
    with caplog.at_level(logging.INFO, logger="closum_sandbox"):
        assert cli.main(["serve", *argv, "--seed", "0"]) == 0
    assert served == [argv[1]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if warned is None:
        assert warnings == []
    else:
        [line] = warnings
        assert "reachable from other machines" in line
        assert warned in line
