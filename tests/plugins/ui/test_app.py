"""The monitoring app's routes, called as the Airflow API server mounts them, with real JWTs of Airflow's auth
manager: who may see what, and that the pages show what the state store holds."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from connectif_provider.ui.data import Freshness
from connectif_sync.contract import ImportOutcome, RunState, RunSummary, SyncObject
from connectif_sync.import_rejects import rejected_rows
from connectif_sync.state import StateStore, pending_table
from emulator.testing import RunningEmulator

DAG = "connectif_contacts"
RUN = "manual__2026-01-02T03:04:05+00:00"
LIB_RUN = f"{DAG}/{RUN}/1"
REJECTED = 120  # more than two pages of 50
#: The row Connectif rejected in the run's import, keyed by the report task from the chunk file's manifest.
CONNECTIF_REJECT = {"line": 4, "field": "_email", "error": "late@example.com invalid", "key": "late@example.com",
                    "value": "late@example.com"}  # fmt: skip


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    with StateStore(url) as store:
        store.begin_run("contacts", "full", None, LIB_RUN)
        rows = [
            {"key": f"user{i:03d}@example.com", "source_ref": f"id={i}", "field": "_email" if i % 3 else "_points",
             "reason": "invalid email address" if i % 3 else "not an integer", "value": f"bad{i}"}
            for i in range(REJECTED)
        ]  # fmt: skip
        store.record_rejected("contacts", LIB_RUN, rows)
        store.finish_run(LIB_RUN, files=[], high_water=None, report={})
        store.suppress("contacts", ["gone@example.com"], "erasure request id=7")
        with store.engine.begin() as conn:
            conn.execute(
                pending_table.insert().values(
                    object="contacts", key="late@example.com", path="/x.csv", line=4, reason="_email: invalid",
                    recorded_at=datetime(2026, 1, 2),
                )
            )  # fmt: skip
        summary = RunSummary(
            dag_id=DAG, run_id=RUN, object=SyncObject.CONTACTS, state=RunState.SUCCESS, mode="full",
            extracted=1000, new=700, changed=50, unchanged=130, to_send=750, sent=749, invalid=80, duplicate=40,
            rejected=121, rejected_by_connectif=1, api_requests=7, library_run_id=LIB_RUN,
            rejected_by_reason={"_email: invalid email address": 80, "_points: not an integer": 40,
                            "Connectif: _email late@example.com invalid": 1},
            notes=["_email: invalid email address: 80"],
            extra={"unconfirmed": 0, "guardrail": {"fired": ["deletes <b>12%</b> > 5%"], "held": True,
                                                   "would_hold": False, "decision": {"by": "ops@example.com"}}},
            import_outcomes=[ImportOutcome(import_id="imp-1", status="finished", total=750, success=749, errors=1,
                                           duration_s=12.5, file_path="/work/contacts-0001.csv",
                                           rejected_rows=[CONNECTIF_REJECT])],
        )  # fmt: skip
        store.record_run_summary(summary)
        # as the report task files it (connectif_sync.import_rejects), with the run's other rejected rows
        store.record_rejected("contacts", LIB_RUN, rejected_rows({"file_path": "/work/contacts-0001.csv",
                                                                  "rejected_rows": [CONNECTIF_REJECT]}))  # fmt: skip
    return url


@pytest.fixture
def client(
    airflow_db: Path, state_url: str, emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    from airflow.api_fastapi.app import init_auth_manager

    from connectif_provider.ui import data
    from connectif_provider.ui.app import app

    init_auth_manager()  # as the API server does at start-up (simple auth manager)
    monkeypatch.setenv("CONNECTIF_STATE_URL", state_url)
    connection = {
        "conn_type": "connectif",
        "host": emulator.base_url,
        "password": emulator.api_key,
        "extra": {"rate_limit_backend": f"sqlite:///{tmp_path / 'bucket.sqlite'}"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CONNECTIF_DEFAULT", json.dumps(connection))
    data._account_cache.clear()
    root = FastAPI()
    root.mount("/connectif", app)
    with TestClient(root) as c:
        yield c


def _token(role: str | None, name: str = "someone") -> str:
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    manager = create_auth_manager()
    return manager.generate_jwt(SimpleAuthManagerUser(username=name, role=role))  # type: ignore[arg-type]


def _as(role: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(role)}"}


ROUTES = ["/connectif/", f"/connectif/runs/{DAG}/{RUN}", "/connectif/rejected?object=contacts",
          "/connectif/rejected.csv?object=contacts", f"/connectif/api/runs/{DAG}/{RUN}"]  # fmt: skip


@pytest.mark.parametrize("route", ROUTES)
def test_anonymous_requests_are_refused(client: TestClient, route: str) -> None:
    assert client.get(route).status_code == 401
    page = client.get(route, headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 302 and "login" in page.headers["location"]  # a browser goes to the login page
    assert client.get(route, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403


@pytest.mark.parametrize("route", ROUTES)
def test_a_user_without_access_to_the_dag_is_refused(client: TestClient, route: str) -> None:
    assert client.get(route, headers=_as(None)).status_code == 403


def test_the_ui_cookie_is_accepted(client: TestClient) -> None:
    client.cookies.set("_token", _token("viewer"))
    try:
        assert client.get("/connectif/").status_code == 200
    finally:
        client.cookies.clear()


def _figures(html: str) -> dict[str, str]:
    return dict(re.findall(r"data-figure='([^']+)'><small>[^<]*</small><b>([^<]*)</b>", html))


def test_run_tab_shows_the_recorded_summary(client: TestClient) -> None:
    resp = client.get(f"/connectif/runs/{DAG}/{RUN}", headers=_as("viewer"))
    assert resp.status_code == 200
    html = resp.text
    assert _figures(html) == {"to send": "750", "sent": "749", "changed": "50", "unchanged": "130", "rejected": "121"}
    assert "_email: invalid email address" in html and ">80<" in html  # reasons with counts
    assert "imp-1" in html and "12.5 s" in html  # the import, its duration
    assert re.search(r"API requests spent</td><td class=n>7<", html)
    data = client.get(f"/connectif/api/runs/{DAG}/{RUN}", headers=_as("viewer")).json()
    assert data["sent"] == 749 and data["imports"] == 1 and data["import_outcomes"][0]["import_id"] == "imp-1"


def test_run_tab_shows_extra_values_as_escaped_tables(client: TestClient) -> None:
    """``extra`` values such as the guardrail's verdict read as key/value rows, not as a Python dict."""
    html = client.get(f"/connectif/runs/{DAG}/{RUN}", headers=_as("viewer")).text
    extra = html.split("id='extra'")[1].split("</section>")[0]
    assert "<tr data-key='unconfirmed'><td>unconfirmed</td><td class=n>0</td></tr>" in extra
    guardrail = extra.split("<tr data-key='guardrail'>")[1]
    assert guardrail.startswith("<td>guardrail</td><td class=n><table class='kv nested'>")
    assert "<td>fired</td><td class=n>deletes &lt;b&gt;12%&lt;/b&gt; &gt; 5%</td>" in guardrail
    assert "<td>held</td><td class=n>yes</td>" in guardrail and "<td>would_hold</td><td class=n>no</td>" in guardrail
    assert "<td>decision</td><td class=n>by: ops@example.com</td>" in guardrail
    assert "{'" not in extra and "<b>12%" not in extra and "True" not in extra


def test_run_tab_shows_the_key_of_each_row_connectif_rejected(client: TestClient) -> None:
    html = client.get(f"/connectif/runs/{DAG}/{RUN}", headers=_as("viewer")).text
    imports = html.split("id='imports'")[1]
    assert re.search(r"<td class='n'>4</td><td class=''>late@example\.com</td><td class=''>_email</td>", imports)
    reason = "Connectif: _email late@example.com invalid"
    link = re.search(rf"<a href='([^']+)'>{re.escape(reason)}</a>", html)  # the reason links to its rows
    assert link is not None
    rows = client.get(link.group(1).replace("&amp;", "&"), headers=_as("viewer")).text.split("id='rejected'")[1]
    assert "late@example.com" in rows and "contacts-0001.csv line 4" in rows and "user001" not in rows


def test_run_tab_of_an_unreported_run(client: TestClient) -> None:
    assert "not reported yet" in client.get(f"/connectif/runs/{DAG}/other", headers=_as("viewer")).text


@pytest.mark.parametrize("dag_id", ["example_bash_operator", "connectif_unknown"])
def test_run_tab_of_another_dag_says_so_and_links_the_connectif_page(client: TestClient, dag_id: str) -> None:
    """Airflow shows a plugin's run tab on every DAG's runs (external views have no per-DAG filter)."""
    resp = client.get(f"/connectif/runs/{dag_id}/manual__x", headers=_as("admin"))
    assert resp.status_code == 200
    assert f"{dag_id} is not a Connectif sync" in resp.text
    assert "href='/plugin/connectif' target=_top" in resp.text  # the Connectif page, in the whole window
    assert client.get(f"/connectif/runs/{dag_id}/manual__x", headers=_as(None)).status_code == 403


def test_status_page_shows_objects_and_account(client: TestClient, emulator: RunningEmulator) -> None:
    html = client.get("/connectif/", headers=_as("viewer")).text
    assert all(f"data-object='{o.value}'" in html for o in SyncObject)
    contacts = html.split("data-object='contacts'")[1].split("</section>")[0]
    assert "sent 749 · rejected 121" in contacts
    assert re.search(r"rows pending retry</td><td class=n><a [^>]*>1<", contacts)
    assert re.search(r"suppressed keys</td><td class=n><a [^>]*>1<", contacts)
    assert "<svg" in contacts  # the chart
    # Freshness comes from this Airflow metadata DB: "never run" unless another test of the session ran the DAG.
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        airflow_runs = session.scalar(select(func.count()).select_from(DagRun).where(DagRun.dag_id == DAG))
    if airflow_runs:
        assert any(f.value in contacts for f in Freshness if f is not Freshness.NEVER), contacts
    else:
        assert "never run" in contacts
    account = html.split("id=account")[1]
    assert "0 queued · 0 in progress" in account
    # the page asked the API once (through the shared bucket); a second view within the cache time does not
    assert re.search(r"requests, last hour</td><td class=n>1<", account)
    again = client.get("/connectif/", headers=_as("viewer")).text.split("id=account")[1]
    assert re.search(r"requests, last hour</td><td class=n>1<", again)


def test_rejected_rows_pages_filters_and_search(client: TestClient) -> None:
    keys: list[str] = []
    url: str | None = "/connectif/rejected?object=contacts"
    while url:
        html = client.get(url, headers=_as("viewer")).text
        keys += re.findall(r"<td class=''>(user\d+@example\.com)</td>", html)
        nxt = re.search(r"<a id=next href='([^']+)'", html)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
    assert keys == [f"user{i:03d}@example.com" for i in range(REJECTED)]  # every row once, in order, 3 pages
    html = client.get("/connectif/rejected?object=contacts&reason=not+an+integer", headers=_as("viewer")).text
    assert len(re.findall(r"not an integer</td>", html)) == 40 and "invalid email address</td>" not in html
    html = client.get("/connectif/rejected?object=contacts&key=user00*", headers=_as("viewer")).text
    found = re.findall(r"<td class=''>(user\d+@example\.com)</td>", html)
    assert found == [f"user00{i}@example.com" for i in range(10)]
    assert "late@example.com" in html and "gone@example.com" in html  # pending rows, suppression list
    assert client.get("/connectif/rejected?object=nope", headers=_as("viewer")).status_code == 404


def test_rejected_csv_lists_every_row_of_the_latest_run(client: TestClient) -> None:
    resp = client.get("/connectif/rejected.csv?object=contacts", headers=_as("viewer"))
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert len(rows) == REJECTED + 1 == 121  # the run summary's "rejected": validation's and Connectif's
    assert rows[1] == {"key": "user001@example.com", "source_row": "id=1", "field": "_email",
                       "reason": "invalid email address", "value": "bad1", "run": LIB_RUN}  # fmt: skip
    assert rows[-1] == {"key": "late@example.com", "source_row": "contacts-0001.csv line 4", "field": "_email",
                        "reason": "Connectif: _email late@example.com invalid", "value": "late@example.com",
                        "run": LIB_RUN}  # fmt: skip


def test_emails_are_masked_by_the_setting(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTIF_UI_MASK_EMAILS", "true")
    text = client.get("/connectif/rejected.csv?object=contacts", headers=_as("viewer")).text
    assert "user001@example.com" not in text and "u***@example.com" in text
    html = client.get("/connectif/rejected?object=contacts", headers=_as("viewer")).text
    assert "@example.com" in html and not re.search(r"user\d+@", html) and "late@" not in html
    tab = client.get(f"/connectif/runs/{DAG}/{RUN}", headers=_as("viewer")).text
    assert "late@example.com" not in tab and "l***@example.com" in tab
    assert "ops@example.com" not in tab and "by: o***@example.com" in tab  # inside the guardrail's extra


def test_the_demos_check_compares_the_pages_with_the_summary(client: TestClient, state_url: str) -> None:
    """``python -m demo`` runs this check after its first runs (``demo.pages``): here on the same app."""
    from demo.pages import compare

    client.app.add_api_route(  # type: ignore[attr-defined]  # Airflow's login, as the API server has it
        "/auth/token", lambda: {"access_token": _token("admin")}, methods=["POST"], status_code=201
    )
    with StateStore(state_url, readonly=True) as store:
        recorded = store.run_summary(DAG, RUN)
    assert recorded is not None
    summary = recorded.as_dict()

    check = compare(client, "admin", "secret", [summary])

    assert check.ok, check.problems
    assert (check.tabs, check.objects, check.csv_rows, check.csv_run) == (1, 1, 121, LIB_RUN)
    assert check.anonymous_status == 401
    wrong = compare(client, "admin", "secret", [{**summary, "sent": 700, "rejected": 120}])
    assert not wrong.ok
    assert any("the tab shows sent 749, the summary 700" in p for p in wrong.problems)
    assert any("rejected.csv?object=contacts lists 121 rows" in p for p in wrong.problems)
    assert any("the Connectif page shows contacts sent/rejected (749, 121)" in p for p in wrong.problems)


def test_a_long_rejected_value_is_cut_on_the_page_not_in_the_csv(client: TestClient, state_url: str) -> None:
    with StateStore(state_url) as store:
        store.record_rejected("contacts", LIB_RUN, [{"key": "long@example.com", "source_ref": "id=999",
                                                     "field": "_name", "reason": "longer than 255 characters",
                                                     "value": "X" * 300}])  # fmt: skip
    html = client.get("/connectif/rejected?object=contacts&key=long@example.com", headers=_as("viewer")).text
    assert "X" * 80 + "… <small>(300 characters" in html and "X" * 81 not in html
    text = client.get("/connectif/rejected.csv?object=contacts&key=long@example.com", headers=_as("viewer")).text
    assert "X" * 300 in text
