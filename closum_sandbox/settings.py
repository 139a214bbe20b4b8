"""The sandbox's knobs, as one dataclass: the only place their defaults are written.

:class:`Settings` is filled by the CLI (:mod:`closum_sandbox.cli`, whose option
defaults are read from it) or by :class:`closum_sandbox.testing.SandboxServer`
and :class:`~closum_sandbox.testing.SandboxProcess` (whose keyword arguments,
:class:`Knobs`, default to it too). The runtime knobs (:data:`RUNTIME_KNOBS`)
can be changed while the server runs through ``PATCH /_admin/config``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

from closum_api.registry import Revision

REVISION_CHOICES = ("2019", "2021", "both")
#: How a list may lie about its pages (``pagination_lie``): ``none``; ``page_count`` (every page announces
#: 1,000,000 pages and a next one; pages past the data are empty); ``repeat_last`` (every page says a next one
#: follows; a page past the data serves the last page again).
PAGINATION_LIES = ("none", "page_count", "repeat_last")
#: What ``POST /v2/lead/add/`` answers when it writes (``lead_add_answer``): its answer is not documented, so
#: the sandbox can give each shape a client may meet: ``status_id`` ``{"status": true, "message", "data": {"id"}}``;
#: ``status`` ``{"status": true, "message"}`` (no id, as the documented ``sms/send`` answers); ``success_lead_id``
#: ``{"success": true, "data": {"lead_id"}}``; ``unknown`` ``{"result": "ok", "lead": {"id", "email"}}`` (no marker).
LEAD_ADD_ANSWERS = ("status_id", "status", "success_lead_id", "unknown")

#: Knobs ``PATCH /_admin/config`` may change, with their kind and lower bound: numbers
#: (``float``/``int``) must reach the bound; on/off knobs (``bool``) take JSON booleans
#: and ignore it.
RUNTIME_KNOBS: dict[str, tuple[type, float]] = {
    "latency_ms": (float, 0),
    "fail_rate": (float, 0),
    "fail_every": (int, 0),
    "pagination_lie": (str, 0),
    "rate_limit": (float, 0),
    "max_page_size": (int, 1),
    "token_ttl": (float, 0),
    "fault_seed": (int, 0),
    "opt_ins_on_retrieve": (bool, 0),
    "lead_add_answer": (str, 0),
}


@dataclass
class Settings:
    """Everything that shapes one sandbox server.

    Attributes:
        host, port: where ``closum-sandbox serve`` listens.
        db: SQLite file; ``None`` keeps the data in memory.
        seed: how many records to seed per resource (0 = only the reference
            data: cities and lifecycle stages); also seeds the data RNG.
        revision: ``"2019"``, ``"2021"`` or ``"both"``.
        username, password: the only credentials ``POST /api/token`` accepts.
        api_key: the only key the V2 API (``/v2``, ``?api-key=``) accepts.
        lead_add_answer: the shape of ``POST /v2/lead/add/``'s answer (see :data:`LEAD_ADD_ANSWERS`).
        token_ttl: token lifetime in seconds.
        latency_ms: delay added to every ``/api`` call.
        fail_rate: fraction (0..1) of ``/api`` calls answered 500/503.
        fail_every: every Nth ``/api`` call is answered 500/503 (0 = off).
        pagination_lie: how lists lie about their pages (see :data:`PAGINATION_LIES`).
        rate_limit: ``/api`` calls allowed per second (0 = unlimited).
        max_page_size: largest ``limit`` honoured; larger ones are capped.
        fault_seed: seed of the RNG that draws the random failures.
        opt_ins_on_retrieve: serve a lead's (unqualified lead's) opt-in in its
            retrieve, as the reference's property table has it; off, retrieves
            carry none, as the reference's retrieve examples show them.
        access_log: let uvicorn log one line per request.
        max_body_bytes: the largest request body accepted; a larger one is
            answered 413 before it is read (every route, ``/api/token`` too).
        admin_token: when set, every ``/_admin`` route but ``/_admin/health``
            requires it (``Authorization: Bearer`` or ``X-Admin-Token``).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    db: str | None = None
    seed: int = 25
    revision: str = "both"
    username: str = "sandbox"
    password: str = field(default="sandbox", repr=False)
    api_key: str = field(default="sandbox-api-key", repr=False)
    lead_add_answer: str = "status_id"
    token_ttl: float = 3600
    latency_ms: float = 0
    fail_rate: float = 0.0
    fail_every: int = 0
    pagination_lie: str = "none"
    rate_limit: float = 0
    max_page_size: int = 1000
    fault_seed: int = 0
    opt_ins_on_retrieve: bool = True
    access_log: bool = False
    max_body_bytes: int = 1024 * 1024
    admin_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """Check the knobs.

        Raises:
            ValueError: a knob is out of its range.
        """
        msg = None
        if str(self.revision) not in REVISION_CHOICES:
            msg = f"revision must be one of {', '.join(REVISION_CHOICES)}, not {self.revision!r}"
        elif not 0 <= self.fail_rate <= 1:
            msg = "fail_rate must be between 0 and 1"
        elif self.pagination_lie not in PAGINATION_LIES:
            msg = f"pagination_lie must be one of {', '.join(PAGINATION_LIES)}, not {self.pagination_lie!r}"
        elif self.fail_every < 0:
            msg = "fail_every must be >= 0"
        elif self.max_page_size < 1:
            msg = "max_page_size must be at least 1"
        elif self.seed < 0:
            msg = "seed must be >= 0"
        elif self.max_body_bytes < 1:
            msg = "max_body_bytes must be at least 1"
        elif self.admin_token is not None and not self.admin_token.strip():
            msg = "admin_token must not be empty"
        if msg is not None:
            raise ValueError(msg)
        self._check_v2_knobs()
        self.revision = str(self.revision)

    def _check_v2_knobs(self) -> None:
        """Check the V2 API's knobs.

        Raises:
            ValueError: a knob is out of its range.
        """
        if self.lead_add_answer not in LEAD_ADD_ANSWERS:
            msg = f"lead_add_answer must be one of {', '.join(LEAD_ADD_ANSWERS)}, not {self.lead_add_answer!r}"
            raise ValueError(msg)
        if not self.api_key.strip():
            msg = "api_key must not be empty"
            raise ValueError(msg)

    @property
    def revisions(self) -> frozenset[Revision]:
        """The API revisions this server answers as."""
        if self.revision == "both":
            return frozenset({Revision.R2019, Revision.R2021})
        return frozenset({Revision(self.revision)})

    def runtime_config(self) -> dict[str, Any]:
        """The knobs ``GET /_admin/config`` shows (never the password, the api-key or the admin token)."""
        data = asdict(self)
        data.pop("password")
        data.pop("api_key")
        data.pop("admin_token")
        return data


class Knobs(TypedDict, total=False):
    """Keyword arguments of the test servers (:mod:`closum_sandbox.testing`).

    The :class:`Settings` fields of the same names; those left out keep the
    :class:`Settings` defaults.
    """

    seed: int
    revision: str
    username: str
    password: str
    api_key: str
    lead_add_answer: str
    token_ttl: float
    latency_ms: float
    fail_rate: float
    fail_every: int
    pagination_lie: str
    rate_limit: float
    max_page_size: int
    fault_seed: int
    opt_ins_on_retrieve: bool
    max_body_bytes: int
    admin_token: str
