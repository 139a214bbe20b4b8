"""Closum's V2 API answers, read tolerantly (their shape is not documented), and its lifecycle stages.

The V2 documentation ("CLOSUM V2.0", 2022) shows the body of ``POST
/v2/lead/add/`` but not its answer; the only answer it shows (``sms/send``) is
``{"status": true, …}``. So an answer is read for what it may say:

- an error status means what it means in V1 (:func:`closum_api.errors.raise_for_status`);
  a 2xx that is not JSON is not a Closum API (``api_v2_url`` is wrong);
- ``status`` or ``success`` true (or ``"ok"``/``"success"``/1) means written;
  false (or ``"error"``/``"fail"``/0) means refused, with the server's words;
- an id is kept if one comes (``data.id``, ``id``, ``data.lead_id``…), as a whole number;
- an answer without either marker is written if it names no error (HTTP said 2xx);
  the first such answer of a run is logged once at WARNING by its shape: its keys
  and the JSON types of their values, never a value
  (``{"result": {"lead": {"id": int}}, "code": str}``), so the first real account
  tells us what the API answers.
"""

from __future__ import annotations

import logging
import threading
import typing as t
from dataclasses import dataclass

from closum_api.errors import (
    ClosumEndpointError,
    ClosumFatalError,
    answer_object,
    one_line,
    raise_for_status,
    server_message,
    shown_url,
    status_text,
)
from closum_api.redact import scrub

if t.TYPE_CHECKING:
    import requests

LOGGER = logging.getLogger("closum_api.v2")

#: The lifecycle stages a V2 contact's ``contact_lifecycle_stage_id`` takes (1 to 9): the nine the V1
#: API's 2021 revision lists, by id, with their labels there.
LIFECYCLE_STAGES = (
    "Não Qualificado",
    "Subscritor",
    "Lead",
    "Marketing Qualified Lead",
    "Sales Qualified Lead",
    "Oportunidade",
    "Cliente",
    "Evangelista",
    "Outro",
)

_TRUE = frozenset({"true", "ok", "success", "1"})
_FALSE = frozenset({"false", "error", "fail", "failed", "failure", "0"})
#: where an id may be, most likely first
ID_PLACES = (("data", "id"), ("id",), ("data", "lead_id"), ("lead_id",), ("data", "contact_id"), ("contact_id",))
#: the end of the line for a 2xx that is not JSON
NOT_CLOSUM_V2 = " — is api_v2_url a Closum V2 API?"
_SHAPE_DEPTH = 3
_SHAPE_KEYS = 20


def check_answer(method: str, path: str, response: requests.Response) -> dict[str, t.Any]:
    """Raise the right error for a failed V2 answer; return the decoded JSON object of a 2xx.

    Args:
        method: the HTTP verb, for the message.
        path: the path below ``api_v2_url`` (``/lead/add/``).
        response: the answer.

    Returns:
        The answer's JSON object, whatever keys it has.

    Raises:
        ClosumBadResponse: a 2xx that is not a JSON object.
        ClosumFatalError: the answer says the write was refused (``status`` or ``success`` false).
    """
    raise_for_status(method, path, response)
    status = response.status_code
    answer = answer_object(method, path, response, NOT_CLOSUM_V2)
    if verdict(answer) is False:
        msg = f"{method} {path} answered {status} saying it failed: {server_message(response)}"
        raise ClosumFatalError(msg, response)
    return answer


def verdict(answer: t.Mapping[str, t.Any]) -> bool | None:
    """What the answer's ``status`` or ``success`` says: True written, False refused, None neither.

    Args:
        answer: a decoded answer.

    Returns:
        The verdict, or None when the answer carries neither marker in a form read here.
    """
    for key in ("status", "success"):
        value = answer.get(key)
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value == 1 if value in {0, 1} else None
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
    return None


def answer_id(answer: t.Mapping[str, t.Any]) -> int | None:
    """The record's id, if the answer carries one where an id may be (:data:`ID_PLACES`)."""
    for place in ID_PLACES:
        value: object = answer
        for key in place:
            value = value.get(key) if isinstance(value, t.Mapping) else None
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and value > 0:
            return value
        if isinstance(value, str) and value.strip().isdigit() and int(value) > 0:
            return int(value)
    return None


def shape(value: object, depth: int = 0) -> str:
    """A JSON value's shape: its keys and the types of their values, never a value.

    Args:
        value: a decoded JSON value.
        depth: how deep this value is (objects deeper than three levels are shown as ``{…}``).

    Returns:
        ``{"status": bool, "data": {"id": int}}``; a list shows its first item's shape (``[str]``).
    """
    if isinstance(value, dict):
        if depth >= _SHAPE_DEPTH:
            return "{…}"
        keys = list(value)
        shown = [f"{scrub(one_line(str(k), 40))!r}: {shape(value[k], depth + 1)}" for k in keys[:_SHAPE_KEYS]]
        more = [f"… {len(keys) - _SHAPE_KEYS} more keys"] if len(keys) > _SHAPE_KEYS else []
        return "{" + ", ".join(shown + more) + "}"
    if isinstance(value, list):
        return f"[{shape(value[0], depth + 1)}]" if value else "[]"
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Answer:
    """What a V2 write's answer says.

    Attributes:
        closum_id: the record's id, if the answer gave one.
        readable: it said ``status``/``success`` true (otherwise it is counted written on its 2xx alone).
    """

    closum_id: int | None
    readable: bool


class AnswerReader:
    """Reads the answers of V2 writes; the first one it cannot read is logged once, by its shape. Thread-safe."""

    def __init__(self) -> None:
        """No answer seen yet."""
        self._lock = threading.Lock()
        self._shown = False

    def read(self, what: str, answer: t.Mapping[str, t.Any]) -> Answer:
        """What ``answer`` (a 2xx JSON object, :func:`check_answer`) says of the write.

        Args:
            what: the request (``POST /lead/add/``), for the log line.
            answer: the decoded answer.

        Returns:
            The answer read.

        Raises:
            ClosumFatalError: an answer without a verdict that names an error (``error``/``errors``).
        """
        readable = verdict(answer) is True
        if not readable:
            with self._lock:
                first, self._shown = not self._shown, True
            if first:
                LOGGER.warning(
                    "Closum's V2 API answered %s with a shape target-closum does not know (no status or success "
                    "true): %s. Counted as written (HTTP 2xx); please report this shape (it holds no values)",
                    what,
                    shape(answer),
                )
            error = next((answer[k] for k in ("error", "errors") if answer.get(k)), None)
            if error is not None:
                msg = f"{what} answered 2xx naming an error: {scrub(one_line(str(error)))}"
                raise ClosumFatalError(msg)
        return Answer(answer_id(answer), readable)


def endpoint_error(response: requests.Response, api_v2_url: str) -> ClosumEndpointError:
    """A V2 write answered 404/405: nothing to write to under ``api_v2_url``.

    Args:
        response: the answer (its request says which method and URL).
        api_v2_url: the ``api_v2_url`` setting.

    Returns:
        The error, its line naming the URL (without its query) and the fix.
    """
    method, url = response.request.method, response.url
    msg = (
        f"{method} {shown_url(url)} answered {status_text(response)}: no such endpoint in Closum's V2 API; check "
        f"api_v2_url ({shown_url(api_v2_url)}): it must be the base URL of the V2 API, such as https://api.closum.com/v2"
    )
    return ClosumEndpointError(msg, response)
