"""Provider metadata read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point.

The connection form is declared here (``conn-fields`` / ``ui-field-behaviour``), the Airflow 3.2+ way:
the UI reads it without importing the hook, and ``get_connection_form_widgets`` (deprecated since 3.2,
and needing flask-appbuilder/wtforms, which Airflow 3 no longer installs) is not needed.
"""

from __future__ import annotations

from typing import Any

from connectif_provider.models import (
    ACCOUNT_RATE_LIMIT_PER_MINUTE,
    DEFAULT_RATE_LIMIT_PER_MINUTE,
)
from connectif_provider.models import (
    DEFAULT_BASE_URL as DEFAULT_HOST,
)

#: Extras of a ``connectif`` connection (all optional).
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "rate_limit_per_minute": {
        "label": "Shared rate limit (requests per window)",
        "description": "Request budget of the whole deployment per window; keep it under the account's "
        f"{ACCOUNT_RATE_LIMIT_PER_MINUTE}/minute to leave headroom for the account's other users. "
        f"Default {DEFAULT_RATE_LIMIT_PER_MINUTE}.",
        "schema": {"type": ["integer", "null"], "default": DEFAULT_RATE_LIMIT_PER_MINUTE},
    },
    "rate_limit_window_seconds": {
        "label": "Rate-limit window (seconds)",
        "description": "Length of the window the budget applies to. Default 60 (Connectif's window).",
        "schema": {"type": ["number", "null"], "default": 60},
    },
    "rate_limit_backend": {
        "label": "Rate-limit backend URL",
        "description": "Where the shared bucket lives, reachable by every Airflow component: a SQLAlchemy URL "
        "(sqlite:////path/file.db for one machine, postgresql://user:pass@host/db for several) or "
        "redis://host:port/db. Default: a SQLite file in AIRFLOW_HOME.",
        "schema": {"type": ["string", "null"]},
    },
    "rate_limit_bucket": {
        "label": "Rate-limit bucket name",
        "description": "Connections naming the same bucket share one budget. Default: derived from the host "
        "and the API key, so every connection to one account shares it.",
        "schema": {"type": ["string", "null"]},
    },
    "timeout": {
        "label": "Request timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": 60},
    },
    "max_attempts": {
        "label": "Attempts per request",
        "description": "How often a request is tried on connection errors, 5xx and 429 before it fails.",
        "schema": {"type": ["integer", "null"], "default": 10},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port"],
    "relabeling": {"host": "API base URL", "password": "API key"},
    "placeholders": {
        "host": DEFAULT_HOST,
        "password": "keyId:keySecret as copied from Connectif",
    },
}


def get_provider_info() -> dict[str, Any]:
    """Describe the provider so that Airflow registers the ``connectif`` connection type."""
    return {
        "package-name": "airflow-connectif",
        "name": "Connectif",
        "description": "Sync contacts, products, purchases and coupons with the Connectif marketing platform.",
        "versions": ["0.1.0"],
        "connection-types": [
            {
                "hook-class-name": "connectif_provider.hooks.connectif.ConnectifHook",
                "hook-name": "Connectif",
                "connection-type": "connectif",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
