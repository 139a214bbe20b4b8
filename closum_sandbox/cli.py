"""``closum-sandbox serve``: run the sandbox with uvicorn.

    closum-sandbox serve --port 8080 --seed 25 --revision both

See ``closum-sandbox serve --help`` for every knob, and README.md. Every option
is a :class:`~closum_sandbox.settings.Settings` field, with its default.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields

import uvicorn

from closum_sandbox.app import create_app
from closum_sandbox.guard import is_loopback
from closum_sandbox.settings import REVISION_CHOICES, Settings

logger = logging.getLogger("closum_sandbox")


def build_parser() -> argparse.ArgumentParser:
    """The ``closum-sandbox`` command line; option defaults come from :class:`Settings`.

    Returns:
        The parser.
    """
    default = Settings()
    parser = argparse.ArgumentParser(prog="closum-sandbox", description="A local Closum-compatible API server.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve", help="serve the sandbox API over HTTP", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    s.add_argument("--host", default=default.host, help="address to listen on")
    s.add_argument("--port", type=int, default=default.port, help="port to listen on (0 = any free port)")
    s.add_argument(
        "--db",
        default=default.db,
        metavar="PATH",
        help="SQLite file keeping the data across restarts (seeded only when new); omitted = in memory",
    )
    s.add_argument(
        "--seed",
        type=int,
        default=default.seed,
        metavar="N",
        help="records to seed per resource (also the data RNG seed); 0 = reference data only",
    )
    s.add_argument(
        "--revision",
        choices=REVISION_CHOICES,
        default=default.revision,
        help="API revision to answer as; resources of the other one answer 404",
    )
    s.add_argument(
        "--username", default=default.username, metavar="U", help="api_username that POST /api/token accepts"
    )
    s.add_argument("--password", default=default.password, metavar="P", help="api_pw that POST /api/token accepts")
    s.add_argument(
        "--token-ttl", type=float, default=default.token_ttl, metavar="SECONDS", help="bearer token lifetime"
    )
    s.add_argument(
        "--latency-ms", type=float, default=default.latency_ms, metavar="MS", help="delay added to every /api call"
    )
    s.add_argument(
        "--fail-rate",
        type=float,
        default=default.fail_rate,
        metavar="F",
        help="fraction (0..1) of /api calls answered 500/503 (some with HTML or empty bodies)",
    )
    s.add_argument(
        "--fault-seed",
        type=int,
        default=default.fault_seed,
        metavar="N",
        help="seed of the RNG drawing --fail-rate failures",
    )
    s.add_argument(
        "--rate-limit",
        type=float,
        default=default.rate_limit,
        metavar="PER_SECOND",
        help="/api calls allowed per second, else 429 with Retry-After: 1 (0 = off)",
    )
    s.add_argument(
        "--max-page-size",
        type=int,
        default=default.max_page_size,
        metavar="N",
        help="largest list limit honoured; larger limits are capped silently",
    )
    s.add_argument(
        "--opt-ins-on-retrieve",
        action=argparse.BooleanOptionalAction,
        default=default.opt_ins_on_retrieve,
        help="serve a lead's opt-in in GET /lead/ID (as the reference's property table has it); "
        "--no-opt-ins-on-retrieve answers retrieves without opt-ins, as the reference's examples show them",
    )
    s.add_argument(
        "--max-body-bytes",
        type=int,
        default=default.max_body_bytes,
        metavar="N",
        help="largest request body accepted on any route; a larger one is answered 413 before it is read",
    )
    s.add_argument(
        "--admin-token",
        default=default.admin_token,
        metavar="TOKEN",
        help="require TOKEN on every /_admin route but /_admin/health "
        "(Authorization: Bearer TOKEN or X-Admin-Token: TOKEN); default: admin routes open",
    )
    s.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction if default.access_log else "store_true",
        default=default.access_log,
        help="log one line per request",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``closum-sandbox`` until it is stopped.

    Args:
        argv: the arguments (default: the process's).

    Returns:
        The exit status: 0, or 2 for a knob out of range.
    """
    args = build_parser().parse_args(argv)
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
