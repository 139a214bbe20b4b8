"""``closum-sandbox serve``: run the sandbox with uvicorn.

    closum-sandbox serve --port 8080 --seed 25 --revision both

See ``closum-sandbox serve --help`` for every knob, and README.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

from closum_sandbox.settings import REVISION_CHOICES, Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="closum-sandbox", description="A local Closum-compatible API server.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve", help="serve the sandbox API over HTTP", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--port", type=int, default=8080, help="port to listen on (0 = any free port)")
    s.add_argument(
        "--db",
        default=None,
        metavar="PATH",
        help="SQLite file keeping the data across restarts (seeded only when new); omitted = in memory",
    )
    s.add_argument(
        "--seed",
        type=int,
        default=25,
        metavar="N",
        help="records to seed per resource (also the data RNG seed); 0 = reference data only",
    )
    s.add_argument(
        "--revision",
        choices=REVISION_CHOICES,
        default="both",
        help="API revision to answer as; resources of the other one answer 404",
    )
    s.add_argument("--username", default="sandbox", metavar="U", help="api_username that POST /api/token accepts")
    s.add_argument("--password", default="sandbox", metavar="P", help="api_pw that POST /api/token accepts")
    s.add_argument("--token-ttl", type=float, default=3600, metavar="SECONDS", help="bearer token lifetime")
    s.add_argument("--latency-ms", type=float, default=0, metavar="MS", help="delay added to every /api call")
    s.add_argument(
        "--fail-rate",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction (0..1) of /api calls answered 500/503 (some with HTML or empty bodies)",
    )
    s.add_argument(
        "--fault-seed", type=int, default=0, metavar="N", help="seed of the RNG drawing --fail-rate failures"
    )
    s.add_argument(
        "--rate-limit",
        type=float,
        default=0,
        metavar="PER_SECOND",
        help="/api calls allowed per second, else 429 with Retry-After: 1 (0 = off)",
    )
    s.add_argument(
        "--max-page-size",
        type=int,
        default=1000,
        metavar="N",
        help="largest list limit honoured; larger limits are capped silently",
    )
    s.add_argument("--access-log", action="store_true", help="log one line per request (off by default)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings(
            host=args.host,
            port=args.port,
            db=args.db,
            seed=args.seed,
            revision=args.revision,
            username=args.username,
            password=args.password,
            token_ttl=args.token_ttl,
            latency_ms=args.latency_ms,
            fail_rate=args.fail_rate,
            rate_limit=args.rate_limit,
            max_page_size=args.max_page_size,
            fault_seed=args.fault_seed,
            access_log=args.access_log,
        )
    except ValueError as exc:
        print(f"closum-sandbox: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from closum_sandbox.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = create_app(settings)
    print(
        f"closum-sandbox: serving revision {settings.revision} at http://{settings.host}:{settings.port}/api "
        f"(docs at /docs)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=settings.access_log, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
