"""Decoding of bodies the sandbox never sends on a 200: built by hand, no server."""

from __future__ import annotations

import pytest
import requests
import urllib3

from closum_api.errors import (
    ClosumAuthError,
    ClosumBadResponse,
    ClosumFatalError,
    ClosumNotFoundError,
    ClosumRetriableError,
    check_response,
    server_message,
)
from closum_api.retry import ClosumGaveUp, RetryPolicy


def response(status: int, body: bytes, content_type: str = "application/json", **headers: str) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body
    r.headers.update({"Content-Type": content_type, **headers})
    r.encoding = "utf-8"
    return r


@pytest.mark.parametrize(
    ("body", "content_type", "error", "fragment"),
    [
        (
            b"<html><head><title>Down for maintenance</title></head></html>",
            "text/html",
            ClosumBadResponse,
            "an HTML page, not JSON: Down for maintenance",
        ),
        (b"", "application/json", ClosumBadResponse, "(empty body)"),
        (
            b'{"success": false, "message": "quota exceeded"}',
            "application/json",
            ClosumFatalError,
            "success=false: quota exceeded",
        ),
        (b'{"success": true}', "application/json", ClosumBadResponse, "without a 'data' key"),
        (b"[1, 2]", "application/json", ClosumBadResponse, "not an object"),
    ],
)
def test_odd_200_bodies_are_clear_errors(body, content_type, error, fragment):
    with pytest.raises(error) as caught:
        check_response("GET", "/lead", response(200, body, content_type))
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("GET /lead answered 200")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, ClosumFatalError),
        (401, ClosumAuthError),
        (403, ClosumFatalError),
        (404, ClosumNotFoundError),
        (405, ClosumFatalError),
        (429, ClosumRetriableError),
        (500, ClosumRetriableError),
        (502, ClosumRetriableError),
        (503, ClosumRetriableError),
        (504, ClosumRetriableError),
        (408, ClosumRetriableError),
        (505, ClosumRetriableError),
        (507, ClosumRetriableError),
        (520, ClosumRetriableError),
        (522, ClosumRetriableError),
        (524, ClosumRetriableError),
    ],
)
def test_statuses_are_classified(status, error):
    with pytest.raises(error) as caught:
        check_response("POST", "/email", response(status, b'{"success": false, "message": "nope"}'))
    assert f"POST /email answered {status}" in str(caught.value)
    assert "nope" in str(caught.value)


def test_long_html_bodies_shrink_to_one_line():
    page = b"<html><body>" + b"<p>line\n</p>" * 500 + b"</body></html>"
    message = server_message(response(503, page, "text/html"))
    assert "\n" not in message
    assert len(message) <= 300


def test_waits_grow_and_honour_retry_after():
    budget = RetryPolicy("http://127.0.0.1:1/api", max_tries=6, backoff_base=0.5, cap=30).budget()
    plain = ClosumRetriableError("x", response(500, b""))
    asked = ClosumRetriableError("x", response(429, b"", **{"Retry-After": "7"}))
    waits = [budget.failed(e, "GET /lead") for e in (plain, plain, asked, plain)]
    # exponential from the base with equal jitter (half of each step at random); a 429's Retry-After exactly
    for wait, (low, high) in zip(waits, [(0.25, 0.5), (0.5, 1.0), (7.0, 7.0), (2.0, 4.0)], strict=True):
        assert low <= wait <= high


def test_each_request_counts_its_own_tries_in_a_row_and_an_answer_starts_it_over():
    budget = RetryPolicy("http://127.0.0.1:1/api", max_tries=3, backoff_base=0).budget()
    failure = ClosumRetriableError("x", response(500, b""))
    for _ in range(10):  # page 1 and page 2 each fail twice, then are answered: never three in a row
        for what in ("GET /lead?page=1", "GET /lead?page=2"):
            budget.failed(failure, what)
            budget.failed(failure, what)
            budget.succeeded(what)
    assert budget.failures == 40
    budget.failed(failure, "POST /lead")
    budget.failed(failure, "POST /lead")
    with pytest.raises(ClosumGaveUp, match=r"\(gave up after 3 tries\)$"):
        budget.failed(failure, "POST /lead")


def test_the_budget_ends_with_one_line_naming_the_url():
    budget = RetryPolicy("http://127.0.0.1:1/api", max_tries=3, backoff_base=0).budget()
    refused = requests.ConnectionError(
        urllib3.exceptions.MaxRetryError(
            None, "/api/token", urllib3.exceptions.NewConnectionError(None, "[Errno 111] Connection refused")
        )
    )
    budget.failed(refused)
    budget.failed(refused)
    with pytest.raises(ClosumGaveUp) as gave_up:
        budget.failed(refused)
    assert str(gave_up.value) == "cannot reach http://127.0.0.1:1/api after 3 tries: connection refused"
    answered = RetryPolicy("http://127.0.0.1:1/api", max_tries=1, backoff_base=0).budget()
    with pytest.raises(ClosumGaveUp, match=r"^GET /lead answered 503 .* \(gave up after 1 try\)$"):
        answered.failed(ClosumRetriableError("GET /lead answered 503 Service Unavailable: x", response(503, b"")))
