"""Airflow-free sync library: extraction, shaping, validation, change detection, chunking."""
