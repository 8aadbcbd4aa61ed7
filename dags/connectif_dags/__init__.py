"""Shared glue of the Connectif DAGs (configuration, params, summaries). Not DAG files: see .airflowignore."""
