"""``closum-sandbox serve``: run the sandbox with uvicorn.

    closum-sandbox serve --port 8080 --seed 25 --revision both

See ``closum-sandbox serve --help`` for every knob, and README.md. Every option
is a :class:`~closum_sandbox.settings.Settings` field, with its default;
:func:`serve_argv` spells the arguments setting some of them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from typing import Any

from closum_sandbox.settings import LEAD_ADD_ANSWERS, PAGINATION_LIES, REVISION_CHOICES, Settings

try:
    import uvicorn

    from closum_sandbox.app import create_app
    from closum_sandbox.guard import is_loopback
except ModuleNotFoundError as missing:  # the web server comes with the [sandbox] extra only
    MISSING: str | None = missing.name
else:
    MISSING = None

#: the one line ``closum-sandbox`` answers when installed without its extra
NEEDS_EXTRA = (
    "closum-sandbox: the sandbox needs the [sandbox] extra ({name} is not installed); "
    "install it with: pip install 'closum-singer[sandbox]'"
)

logger = logging.getLogger("closum_sandbox")


def option(name: str, *, on: bool = True) -> str:
    """The ``serve`` option setting the :class:`Settings` field ``name``.

    Args:
        name: the field's name.
        on: ``False`` for the switch-off spelling of an on/off option (``--no-...``,
            as :class:`argparse.BooleanOptionalAction` spells it).

    Returns:
        ``--<name>`` with dashes for underscores (``--no-<name>`` when not ``on``).
    """
    return f"--{'' if on else 'no-'}{name.replace('_', '-')}"


def serve_argv(**knobs: object) -> list[str]:
    """The ``closum-sandbox serve`` arguments that set these :class:`Settings` fields.

    Args:
        knobs: field values; an on/off field (a ``bool``) becomes ``--name`` or ``--no-name``,
            any other ``--name value``. Fields left out keep their defaults.

    Returns:
        The arguments, ``serve`` first.
    """
    argv = ["serve"]
    for name, value in knobs.items():
        if isinstance(value, bool):
            argv.append(option(name, on=value))
        else:
            argv += [option(name), str(value)]
    return argv


def build_parser() -> argparse.ArgumentParser:
    """The ``closum-sandbox`` command line; each option is a :class:`Settings` field, with the field's default.

    Returns:
        The parser.
    """
    default = Settings()
    parser = argparse.ArgumentParser(prog="closum-sandbox", description="A local Closum-compatible API server.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", help="serve the sandbox API over HTTP", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )

    def knob(name: str, help_text: str, **kwargs: Any) -> None:
        """:func:`option` ``name`` sets the field ``name``; its default is the field's."""
        serve.add_argument(option(name), default=getattr(default, name), help=help_text, **kwargs)

    knob("host", "address to listen on")
    knob("port", "port to listen on (0 = any free port)", type=int)
    knob(
        "db", "SQLite file keeping the data across restarts (seeded only when new); omitted = in memory", metavar="PATH"
    )
    knob(
        "seed", "records to seed per resource (also the data RNG seed); 0 = reference data only", type=int, metavar="N"
    )
    knob("revision", "API revision to answer as; resources of the other one answer 404", choices=REVISION_CHOICES)
    knob("username", "api_username that POST /api/token accepts", metavar="U")
    knob("password", "api_pw that POST /api/token accepts", metavar="P")
    knob("api_key", "api-key that the V2 API (/v2/...?api-key=) accepts", metavar="KEY")
    knob(
        "lead_add_answer",
        "the shape of POST /v2/lead/add/'s answer (undocumented): status_id, status (no id), "
        "success_lead_id, or unknown (no status or success marker)",
        choices=LEAD_ADD_ANSWERS,
    )
    knob("token_ttl", "bearer token lifetime", type=float, metavar="SECONDS")
    knob("latency_ms", "delay added to every /api and /v2 call", type=float, metavar="MS")
    knob(
        "fail_rate",
        "fraction (0..1) of /api calls answered 500/503 (some with HTML or empty bodies)",
        type=float,
        metavar="F",
    )
    knob("fail_every", "every Nth /api call is answered 500/503 (0 = off)", type=int, metavar="N")
    knob("fault_seed", "seed of the RNG drawing --fail-rate failures", type=int, metavar="N")
    knob(
        "pagination_lie",
        "lists lie about their pages: page_count (1,000,000 pages announced, empty past the data) or "
        "repeat_last (a next page always announced, the last one served again past the data)",
        choices=PAGINATION_LIES,
    )
    knob(
        "rate_limit",
        "/api calls allowed per second, else 429 with Retry-After: 1 (0 = off)",
        type=float,
        metavar="PER_SECOND",
    )
    knob("max_page_size", "largest list limit honoured; larger limits are capped silently", type=int, metavar="N")
    knob(
        "opt_ins_on_retrieve",
        "serve a lead's opt-in in GET /lead/ID (as the reference's property table has it); "
        "--no-opt-ins-on-retrieve answers retrieves without opt-ins, as the reference's examples show them",
        action=argparse.BooleanOptionalAction,
    )
    knob(
        "max_body_bytes",
        "largest request body accepted on any route; a larger one is answered 413 before it is read",
        type=int,
        metavar="N",
    )
    knob(
        "admin_token",
        "require TOKEN on every /_admin route but /_admin/health "
        "(Authorization: Bearer TOKEN or X-Admin-Token: TOKEN); default: admin routes open",
        metavar="TOKEN",
    )
    knob(
        "access_log",
        "log one line per request",
        action=argparse.BooleanOptionalAction if default.access_log else "store_true",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``closum-sandbox`` until it is stopped.

    Args:
        argv: the arguments (default: the process's).

    Returns:
        The exit status: 0, 1 without the ``[sandbox]`` extra, or 2 for a knob out of range.
    """
    args = build_parser().parse_args(argv)
    if MISSING is not None:
        sys.stderr.write(NEEDS_EXTRA.format(name=MISSING) + "\n")
        return 1
    try:
        settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
    except ValueError as exc:
        sys.stderr.write(f"closum-sandbox: {exc}\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not is_loopback(settings.host):
        logger.warning(
            "closum-sandbox: WARNING: listening on %s, reachable from other machines: its credentials are public%s",
            settings.host,
            " (admin routes need --admin-token)"
            if settings.admin_token
            else " and its /_admin routes (reset, faults, every record) are open; set --admin-token",
        )
    app = create_app(settings)
    logger.info(
        "closum-sandbox: serving revision %s at http://%s:%s/api (docs at /docs)",
        settings.revision,
        settings.host,
        settings.port,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=settings.access_log, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
