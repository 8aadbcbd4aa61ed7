"""The Airflow UI plugin: a "Connectif" page, a "Connectif sync" tab on every DAG run, rejected rows to browse.

Runs in the API server (registered through the ``airflow.plugins`` entry point): it reads the sync state store's
run history and rejected rows, Airflow's own DAG runs, the shared rate-limit bucket and, through a cache, the
account's import queue. Every route checks the logged-in user's right to read the DAG's runs.

Unlike the rest of the provider (hooks, operators, triggers), this sub-package reads the sync library's state
store (``connectif_sync.store``) and its typed records (``connectif_sync.contract``): the pages show what the
library recorded. Nothing in the provider's task-side code imports it.
"""
