"""Command line: use and check the sync library without Airflow.

``connectif-sync`` (console script) or ``python -m connectif_sync``::

    connectif-sync sample-erp --url URL --contacts N --products N --orders N --seed S
    connectif-sync plan    --object OBJ --source URL [--state URL] [--mapping FILE] [--incremental]
    connectif-sync extract --object OBJ --source URL --out DIR [--state URL] [--mapping FILE]
    connectif-sync confirm --state URL FILE.csv [--failed-lines 3,17]
    connectif-sync rejected --object OBJ [--state URL] [--run-id RUN] [--limit N]
    connectif-sync suppressed [--object OBJ] [--state URL]
    connectif-sync suppress --object OBJ --reason TEXT KEY...   /   unsuppress --object OBJ KEY...

``plan`` and ``extract`` print a JSON document on stdout (the report, and for ``extract`` the files);
``--start``/``--end`` select the order-date window of purchases. Exit status: 0 on success, 2 for bad
arguments or an invalid mapping (the message names the file, entry and fix), 1 for any other error.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectif_sync.chunk import DEFAULT_MAX_FILE_BYTES
from connectif_sync.extract import DEFAULT_READERS
from connectif_sync.mappings import OBJECTS, MappingError
from connectif_sync.pipeline import run_sync
from connectif_sync.probe import PROBE_READERS
from connectif_sync.purchases import purchase_payloads
from connectif_sync.store import DEFAULT_STATE_URL, StateStore
from connectif_sync.timefmt import parse_when

PURCHASES_PER_FILE = 100_000


def _now_arg(value: str) -> datetime:
    if value in ("now", "today"):
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        return now.replace(hour=0, minute=0, second=0) if value == "today" else now
    parsed = parse_when(value)
    assert parsed is not None
    return parsed


def _common(p: argparse.ArgumentParser, out: bool) -> None:
    p.add_argument("--object", required=True, choices=OBJECTS)
    p.add_argument("--source", required=True, help="SQLAlchemy URL of the ERP / data mart")
    p.add_argument("--state", default=DEFAULT_STATE_URL, help=f"state store URL (default {DEFAULT_STATE_URL})")
    p.add_argument("--mapping", help="mapping YAML (default: the shipped one for the sample ERP)")
    p.add_argument("--incremental", action="store_true", help="only rows changed since the watermark")
    p.add_argument("--full-resync", action="store_true", help="send every valid row, changed or not")
    p.add_argument("--lookback-minutes", type=float, default=60.0, help="watermark look-back (default 60)")
    p.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES)
    p.add_argument("--chunk-rows", type=int, default=32_768)
    p.add_argument(
        "--readers",
        type=int,
        default=None,
        help=f"connections reading a full scan of an integer-keyed table (default {DEFAULT_READERS}, and "
        f"{PROBE_READERS} for a second full scan's probe)",
    )
    p.add_argument("--start", help="purchases: first order date (inclusive), ISO 8601")
    p.add_argument("--end", help="purchases: last order date (exclusive), ISO 8601")
    if out:
        p.add_argument("--out", required=True, help="folder for the CSV chunks (purchases: JSON lines)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="connectif-sync", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample-erp", help="create and fill the sample ERP (deterministic)")
    p.add_argument("--url", required=True, help="SQLAlchemy URL, e.g. sqlite:///erp.db")
    p.add_argument("--contacts", type=int, default=10_000)
    p.add_argument("--products", type=int, default=1_000)
    p.add_argument("--orders", type=int, default=2_000)
    p.add_argument("--coupons", type=int, default=600, help="coupon codes in the pool (all sets)")
    p.add_argument("--coupon-sets", type=int, default=3)
    p.add_argument("--erasures", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dirty-rate", type=float, default=0.02)
    p.add_argument("--order-days", type=float, default=7.0, help="orders spread over this many days before --now")
    p.add_argument("--now", type=_now_arg, default=None, help="anchor of all dates: ISO 8601, 'today' or 'now'")

    _common(sub.add_parser("plan", help="what a sync would send (nothing written)"), out=False)
    _common(sub.add_parser("extract", help="write the chunk files (or purchase payloads) and print the report"), True)

    p = sub.add_parser("confirm", help="commit a chunk file after Connectif imported it")
    p.add_argument("files", nargs="+")
    p.add_argument("--state", default=DEFAULT_STATE_URL)
    p.add_argument("--failed-lines", default="", help="comma-separated 1-based data lines Connectif rejected")

    p = sub.add_parser("suppressed", help="keys never sent again (erased contacts), with the reason")
    p.add_argument("--object", choices=OBJECTS)
    p.add_argument("--state", default=DEFAULT_STATE_URL)
    for name, text in (("suppress", "never send these keys again (contacts: emails)"),
                       ("unsuppress", "allow these keys to be sent again (an erasure withdrawn)")):  # fmt: skip
        p = sub.add_parser(name, help=text)
        p.add_argument("keys", nargs="+", help="keys as the sync writes them (contacts: trimmed, lower-case email)")
        p.add_argument("--object", required=True, choices=OBJECTS)
        p.add_argument("--state", default=DEFAULT_STATE_URL)
        if name == "suppress":
            p.add_argument("--reason", required=True, help="why, e.g. 'erasure request 42 of 2026-11-20'")

    p = sub.add_parser("rejected", help="rows set aside by validation in the latest run (all of them)")
    p.add_argument("--object", required=True, choices=OBJECTS)
    p.add_argument("--state", default=DEFAULT_STATE_URL)
    p.add_argument("--run-id", help="the run to list (default: the object's latest run)")
    p.add_argument(
        "--limit",
        type=_positive,
        default=None,
        help="print at most N rows (default: all); says on stderr how many were left out",
    )
    return parser


def _sync_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from datetime import timedelta

    return {
        "state_url": args.state,
        "mapping": args.mapping,
        "full_resync": args.full_resync,
        "incremental": args.incremental,
        "lookback": timedelta(minutes=args.lookback_minutes),
        "max_file_bytes": args.max_file_bytes,
        "chunk_rows": args.chunk_rows,
        "readers": args.readers,
    }


def _purchases(args: argparse.Namespace, dry_run: bool) -> dict[str, Any]:
    batch = purchase_payloads(
        args.source, args.start, args.end, mapping=args.mapping, state_url=args.state,
        chunk_rows=args.chunk_rows, dry_run=dry_run,
    )  # fmt: skip
    files: list[str] = []
    if dry_run:
        for _ in batch:
            pass
    else:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        fh = None
        count = 0
        try:
            for payload in batch:
                if count % PURCHASES_PER_FILE == 0:
                    if fh:
                        fh.close()
                    path = out / f"purchases-{count // PURCHASES_PER_FILE + 1:04d}.jsonl"
                    files.append(str(path))
                    fh = path.open("w", encoding="utf-8")
                assert fh is not None
                fh.write(json.dumps(payload, ensure_ascii=False) + "\n")
                count += 1
        finally:
            if fh:
                fh.close()
    report = batch.report.as_dict()
    report["files"] = len(files)
    return {"report": report, "files": files}


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n} (leave --limit out to list every row)")
    return n


def _print_rejected(args: argparse.Namespace) -> None:
    """A JSON array of every rejected row (read a page at a time), or the first ``--limit``, saying so."""
    with StateStore(args.state, readonly=True) as store:
        total = store.count_rejected(args.object, args.run_id)
        rows = store.iter_rejected(args.object, args.run_id)
        if args.limit is not None:
            rows = itertools.islice(rows, args.limit)
        out = sys.stdout
        out.write("[")
        printed = 0
        for row in rows:
            out.write(",\n" if printed else "\n")
            out.write(textwrap.indent(json.dumps(row, indent=2, ensure_ascii=False), "  "))
            printed += 1
        out.write("\n]\n" if printed else "]\n")
    if printed < total:
        print(
            f"connectif-sync: showing {printed} of {total} rejected rows (--limit {args.limit}); "
            "leave out --limit to list them all",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "sample-erp":
            # Test data outside the library: imported for this command only, not on every call of the CLI.
            from sample_erp import generate

            summary = generate(
                args.url, contacts=args.contacts, products=args.products, orders=args.orders, coupons=args.coupons,
                coupon_sets=args.coupon_sets, erasures=args.erasures, seed=args.seed, dirty_rate=args.dirty_rate,
                order_days=args.order_days, now=args.now,
            )  # fmt: skip
            print(json.dumps(summary.as_dict(), indent=2))
        elif args.command in ("plan", "extract"):
            dry = args.command == "plan"
            if args.object == "purchases":
                doc = _purchases(args, dry_run=dry)
            else:
                result = run_sync(
                    args.object, args.source, None if dry else args.out, dry_run=dry, **_sync_kwargs(args)
                )
                doc = result.as_dict()
                if dry:
                    doc.pop("files")
            print(json.dumps(doc, indent=2, ensure_ascii=False))
        elif args.command == "confirm":
            failed = {int(x) for x in args.failed_lines.split(",") if x.strip()}
            with StateStore(args.state) as store:
                for f in args.files:
                    print(json.dumps(store.confirm_file(f, failed)))
        elif args.command == "suppressed":
            with StateStore(args.state, readonly=True) as store:
                print(json.dumps(store.suppressed(args.object), indent=2, ensure_ascii=False, default=str))
        elif args.command in ("suppress", "unsuppress"):
            keys = [k.strip().lower() for k in args.keys] if args.object == "contacts" else args.keys  # as synced
            with StateStore(args.state) as store:
                if args.command == "suppress":
                    print(json.dumps({"suppressed": store.suppress(args.object, keys, args.reason)}))
                else:
                    print(json.dumps({"unsuppressed": store.unsuppress(args.object, keys)}))
        elif args.command == "rejected":
            _print_rejected(args)
    except MappingError as exc:
        print(f"connectif-sync: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"connectif-sync: error: {exc}", file=sys.stderr)
        return 1
    return 0
