"""Connectif provider for Apache Airflow: hook, operators, sensors and triggers."""

from __future__ import annotations

__version__ = "0.1.0"
