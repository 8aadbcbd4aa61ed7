"""Provider metadata read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any


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
                "connection-type": "connectif",
            }
        ],
    }
