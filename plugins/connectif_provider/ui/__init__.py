"""The Airflow UI plugin: a "Connectif" page, a "Connectif sync" tab on every DAG run, rejected rows to browse.

Runs in the API server (registered through the ``airflow.plugins`` entry point): it reads the sync state store's
run history and rejected rows, Airflow's own DAG runs, the shared rate-limit bucket and, through a cache, the
account's import queue. Every route checks the logged-in user's right to read the DAG's runs.
"""
