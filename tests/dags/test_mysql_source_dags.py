"""The contacts, products and purchases DAGs with the ERP in MySQL (a real MariaDB server): the same DAGs and
the same checks as with the SQLite ERP (``test_contacts_products_dags.py``, ``test_purchases_dag.py``)."""

from __future__ import annotations

import pytest

from tests.dags import test_contacts_products_dags as bulk
from tests.dags import test_purchases_dag as purchases
from tests.fixtures.dags import DagSandbox

pytestmark = pytest.mark.mysql


@pytest.fixture
def sandbox_erp_url(mysql_database: str) -> str:
    """The sandbox's sample ERP in a fresh MariaDB database (overrides the SQLite default)."""
    return mysql_database


def test_contacts_from_mysql(dag_sandbox: DagSandbox) -> None:
    assert dag_sandbox.erp_url.startswith("mysql+pymysql://")
    bulk.test_contacts_sync_sends_exactly_the_valid_rows_then_nothing(dag_sandbox)


def test_products_from_mysql(dag_sandbox: DagSandbox) -> None:
    bulk.test_products_sync_sends_exactly_the_valid_rows_then_nothing(dag_sandbox)


def test_purchases_from_mysql(dag_sandbox: DagSandbox) -> None:
    purchases.test_purchases_reach_connectif_even_before_their_contacts_and_products(dag_sandbox)
