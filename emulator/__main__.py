"""``python -m emulator`` / ``connectif-emulator``: run the Connectif API emulator under uvicorn."""

from __future__ import annotations

import argparse
import gc
import logging
import socket
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from emulator.app import create_app
from emulator.settings import Settings
from emulator.state import create_state, generate_key


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="connectif-emulator", description="Local emulator of the Connectif REST API")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0 = any free port)")
    parser.add_argument("--api-key", help="key of the default account (generated and printed when left out)")
    parser.add_argument("--state", type=Path, help="SQLite file keeping the data across restarts (default: memory)")
    parser.add_argument(
        "--speed",
        type=float,
        default=defaults.import_rows_per_s,
        help=f"import processing speed in rows/s; 0 = as fast as possible (default {defaults.import_rows_per_s:g})",
    )
    parser.add_argument(
        "--authorized-domain",
        action="append",
        dest="domains",
        metavar="DOMAIN",
        help="authorised domain of the default account, subdomains included (repeatable; default example.com)",
    )
    parser.add_argument("--rate-limit", type=int, default=defaults.rate_limit, help="requests per window (100)")
    parser.add_argument("--rate-window", type=float, default=defaults.rate_limit_window_s, help="window seconds (60)")
    parser.add_argument(
        "--no-retry-after", action="store_true", help="answer 429 without a Retry-After header (contract variant)"
    )
    parser.add_argument(
        "--export-seconds",
        type=float,
        default=defaults.export_processing_s,
        help=f"time an export takes to finish (default {defaults.export_processing_s:g})",
    )
    parser.add_argument(
        "--coupon-lag",
        type=float,
        default=defaults.coupon_counts_lag_s,
        help=f"seconds before coupon set counts show changes (default {defaults.coupon_counts_lag_s:g})",
    )
    parser.add_argument(
        "--strict-fields",
        action="store_true",
        help="answer 422 to request fields the API contract does not name (default: ignore them, as Connectif "
        "does not document refusing them)",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    return parser


def _listen(host: str, port: int) -> socket.socket:
    """Bind here so that --port 0 works: the chosen port is printed for whoever started us."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"connectif-emulator: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    sock = _listen(args.host, args.port)
    api_key = args.api_key or generate_key()
    settings = {
        "import_rows_per_s": args.speed,
        "rate_limit": args.rate_limit,
        "rate_limit_window_s": args.rate_window,
        "retry_after_header": not args.no_retry_after,
        "export_processing_s": args.export_seconds,
        "coupon_counts_lag_s": args.coupon_lag,
        "strict_unknown_fields": args.strict_fields,
    }
    if args.state is not None:
        args.state.parent.mkdir(parents=True, exist_ok=True)
    try:
        state = create_state(api_key=api_key, state_file=args.state, authorized_domains=args.domains, settings=settings)
    except (sqlite3.DatabaseError, ValidationError) as exc:
        sock.close()
        raise SystemExit(f"connectif-emulator: cannot start: {exc}") from None
    if not args.api_key:
        print(f"Connectif emulator API key: {api_key}", flush=True)
    logging.basicConfig(level=args.log_level.upper())
    # Imports allocate millions of short-lived rows; the default collector thresholds spend ~25% of a large
    # import in full collections. Objects alive at start-up never need scanning again.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    # The import worker is CPU-bound; a request gives the GIL up at every socket and SQLite call and waits a
    # whole switch interval (5 ms by default) to get it back. 0.5 ms keeps the API responsive during imports.
    sys.setswitchinterval(0.0005)
    config = uvicorn.Config(
        create_app(state), host=args.host, port=args.port, log_level=args.log_level, lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    port = sock.getsockname()[1]
    print(f"Connectif emulator listening on http://{args.host}:{port}", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        state.close()
    sys.exit(0 if server.started else 1)


if __name__ == "__main__":
    main()
