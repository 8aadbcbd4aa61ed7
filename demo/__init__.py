"""Orchestration of ``make demo``: sample ERP, emulator and ``airflow standalone`` in one command."""
