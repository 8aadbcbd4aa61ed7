"""Write the ``.env`` of the docker-compose deployment from ``.env.example``, with fresh random secrets.

Standard library only, so that it runs with any ``python3`` before anything is installed:

    python3 deploy/make_env.py                                   # demo: every secret generated
    python3 deploy/make_env.py CONNECTIF_API_KEY=id:secret CONNECTIF_HOST=https://api.connectif.cloud

Why a script rather than "copy and edit": the Fernet key has a precise format, the JWT and session secrets
must be long and random, and several URLs repeat the PostgreSQL password. ``${NAME}`` references inside
values are expanded here, because docker-compose v1 does not interpolate inside ``.env`` files.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def fernet_key() -> str:
    """32 random bytes, url-safe base64: the format ``cryptography.fernet.Fernet`` requires."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


#: Variables that get a random value when ``.env.example`` leaves them empty and none is given.
GENERATED: dict[str, Callable[[], str]] = {
    "AIRFLOW_FERNET_KEY": fernet_key,
    "AIRFLOW_JWT_SECRET": lambda: secrets.token_urlsafe(48),
    "AIRFLOW_API_SECRET_KEY": lambda: secrets.token_urlsafe(48),
    "AIRFLOW_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(12),
    "POSTGRES_PASSWORD": lambda: secrets.token_hex(16),
    "ERP_DB_PASSWORD": lambda: secrets.token_hex(16),
    # Only useful with the demo profile's emulator, which accepts whatever key .env holds.
    "CONNECTIF_API_KEY": lambda: f"demo{secrets.token_hex(4)}:{secrets.token_hex(16)}",
}


def parse_env_file(text: str) -> list[tuple[str, str]]:
    """``NAME=value`` pairs of an env file in order; comments and blank lines are skipped."""
    pairs: list[tuple[str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ASSIGNMENT.match(line)
        if match is None:
            raise ValueError(f"line {number}: {raw!r} is not NAME=value")
        pairs.append((match.group(1), match.group(2)))
    return pairs


def documented_variables(text: str) -> dict[str, str]:
    """Each variable of ``.env.example`` with the comment block just above it (empty when undocumented)."""
    docs: dict[str, str] = {}
    comment: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comment.append(line.lstrip("#").strip())
        elif not line:
            comment = []
        else:
            match = _ASSIGNMENT.match(line)
            if match is not None:
                docs[match.group(1)] = " ".join(c for c in comment if c and not set(c) <= {"-"})
                # Consecutive variables may share the comment block above the first of them.
    return docs


def render(example: str, overrides: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The ``.env`` text (the example's comments kept) and its resolved values."""
    known = {name for name, _ in parse_env_file(example)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown variable(s) {', '.join(unknown)}: .env.example documents {', '.join(sorted(known))}")
    raw: dict[str, str] = {}
    for name, value in parse_env_file(example):
        if name in overrides:
            value = overrides[name]
        elif not value and name in GENERATED:
            value = GENERATED[name]()
        raw[name] = value
    values: dict[str, str] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> str:
        if name in values:
            return values[name]
        if name in chain:
            raise ValueError(f"${{...}} references loop: {' -> '.join((*chain, name))}")
        if name not in raw:
            raise ValueError(f"{chain[-1]} refers to ${{{name}}}, which .env.example does not define")
        values[name] = _REFERENCE.sub(lambda ref: resolve(ref.group(1), (*chain, name)), raw[name])
        return values[name]

    out: list[str] = []
    for line in example.splitlines():
        match = _ASSIGNMENT.match(line.strip())
        out.append(f"{match.group(1)}={resolve(match.group(1), ())}" if match else line)
    return "\n".join(out) + "\n", values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignments", nargs="*", metavar="NAME=value", help="values to use instead of the example's")
    parser.add_argument("--example", type=Path, default=REPO / ".env.example")
    parser.add_argument("--out", type=Path, default=REPO / ".env")
    parser.add_argument("--force", action="store_true", help="overwrite an existing .env")
    args = parser.parse_args(argv)
    overrides: dict[str, str] = {}
    for item in args.assignments:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"{item!r} is not NAME=value")
        overrides[name] = value
    if args.out.exists() and not args.force:
        print(f"{args.out} exists; pass --force to replace it (its secrets would change)", file=sys.stderr)
        return 1
    try:
        text, values = render(args.example.read_text(encoding="utf-8"), overrides)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(text, encoding="utf-8")
    args.out.chmod(0o600)
    print(f"wrote {args.out} (mode 600). Airflow UI login: {values.get('AIRFLOW_ADMIN_USERNAME', 'admin')} / "
          f"{values.get('AIRFLOW_ADMIN_PASSWORD', '')}")
    if "CONNECTIF_API_KEY" not in overrides:
        print("CONNECTIF_API_KEY is a generated demo key for the emulator; for a real account run again with "
              "--force CONNECTIF_API_KEY=<keyId>:<keySecret> CONNECTIF_HOST=https://api.connectif.cloud")
    return 0


if __name__ == "__main__":
    sys.exit(main())
