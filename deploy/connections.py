"""Print the deployment's Airflow connections as JSON for ``airflow connections import`` (used by init.sh).

Built from environment variables so that no secret is written in docker-compose.yaml; the API key travels
in the connection's password field, which Airflow encrypts with the Fernet key. Standard library only: it
runs in the image before anything else is configured.

- ``connectif_default``: host ``CONNECTIF_HOST``, API key ``CONNECTIF_API_KEY``, and as extras the shared
  rate-limit bucket (``CONNECTIF_RATE_LIMIT_BACKEND``, a SQLAlchemy URL every worker and the triggerer reach,
  and ``CONNECTIF_RATE_LIMIT_PER_MINUTE``), which is how the provider's hook reads them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any


def connections(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The connections to import, keyed by conn_id; raises ``KeyError`` naming a missing variable."""
    try:
        api_key = env["CONNECTIF_API_KEY"]
    except KeyError:
        raise KeyError("CONNECTIF_API_KEY is not set (the Connectif API key, keyId:keySecret)") from None
    if not api_key:
        raise KeyError("CONNECTIF_API_KEY is empty (the Connectif API key, keyId:keySecret)")
    extra: dict[str, Any] = {}
    if env.get("CONNECTIF_RATE_LIMIT_BACKEND"):
        extra["rate_limit_backend"] = env["CONNECTIF_RATE_LIMIT_BACKEND"]
    if env.get("CONNECTIF_RATE_LIMIT_PER_MINUTE"):
        extra["rate_limit_per_minute"] = int(env["CONNECTIF_RATE_LIMIT_PER_MINUTE"])
    return {
        "connectif_default": {
            "conn_type": "connectif",
            "description": "Connectif account used by the airflow-connectif DAGs (written by deploy/init.sh).",
            "host": env.get("CONNECTIF_HOST") or "https://api.connectif.cloud",
            "password": api_key,
            "extra": json.dumps(extra),
        }
    }


def main() -> int:
    try:
        payload = connections(os.environ)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    json.dump(payload, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
