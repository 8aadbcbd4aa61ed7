"""The demo checks its own monitoring pages: they must show what the printed summary says.

After the first runs, with the admin's token: each run's "Connectif sync" tab shows the run's sent and rejected
figures; the Connectif page shows, per object, those of a run of this demo; ``rejected.csv?object=contacts``
lists one row per rejected contact of the latest contacts run, each with a reason; an anonymous request is
refused. What differs is printed (and makes ``--no-wait`` exit non-zero): a page that disagrees with the
summary is a bug.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

#: The figures a page shows, as the run tab marks them (``data-figure``).
_FIGURE = re.compile(r"data-figure='([^']+)'><small>[^<]*</small><b>([^<]*)</b>")
_LAST_REPORT = re.compile(r"sent ([\d,]+) · rejected ([\d,]+)")


@dataclass
class PagesCheck:
    """What the check compared, and what did not agree."""

    tabs: int = 0
    objects: int = 0
    csv_rows: int | None = None
    csv_run: str | None = None
    anonymous_status: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        if not self.ok:
            return [f"✗ {p}" for p in self.problems]
        out = [
            f"✓ the {self.tabs} run tabs and the Connectif page ({self.objects} objects) show the sent and rejected "
            "figures of the summary above",
            f"✓ anonymous requests are refused (HTTP {self.anonymous_status})",
        ]
        if self.csv_rows is not None:
            out.insert(1, f"✓ rejected.csv?object=contacts lists the {self.csv_rows} rejected contacts of the "
                          f"latest run ({self.csv_run}), each with a reason")  # fmt: skip
        return out


def _number(text: str) -> int | None:
    digits = text.replace(",", "").strip()
    return int(digits) if digits.isdigit() else None


def tab_figures(html: str) -> dict[str, int | None]:
    """The figures of a run tab (``sent``, ``rejected``...)."""
    return {name: _number(value) for name, value in _FIGURE.findall(html)}


def object_reports(html: str) -> dict[str, tuple[int, int]]:
    """The Connectif page's "last report" (sent, rejected) per object card."""
    out: dict[str, tuple[int, int]] = {}
    for card in html.split("data-object='")[1:]:
        name = card.split("'", 1)[0]
        found = _LAST_REPORT.search(card.split("</section>", 1)[0])
        if found:
            out[name] = (int(found.group(1).replace(",", "")), int(found.group(2).replace(",", "")))
    return out


def check_pages(
    base_url: str, username: str, password: str, summaries: Iterable[dict[str, Any]], *, timeout: float = 60.0
) -> PagesCheck:
    """Compare the monitoring pages of the Airflow at ``base_url`` with the runs' ``summaries`` (the ``summary``
    XComs the demo printed, oldest run first), as ``username`` would see them."""
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout) as http:
        return compare(http, username, password, summaries)


def compare(http: httpx.Client, username: str, password: str, summaries: Iterable[dict[str, Any]]) -> PagesCheck:
    """:func:`check_pages` through an open client (its ``base_url`` is the API server)."""
    result = PagesCheck()
    runs = [s for s in summaries if s.get("dag_id") and s.get("run_id")]
    login = http.post("/auth/token", json={"username": username, "password": password})
    if login.status_code not in (200, 201):
        result.problems.append(f"login as {username!r}: HTTP {login.status_code}")
        return result
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    for s in runs:
        path = f"/connectif/runs/{quote(s['dag_id'], safe='')}/{quote(s['run_id'], safe='')}"
        resp = http.get(path, headers=auth)
        if resp.status_code != 200:
            result.problems.append(f"{path}: HTTP {resp.status_code}")
            continue
        shown = tab_figures(resp.text)
        for name in ("sent", "rejected"):
            if shown.get(name) != s.get(name):
                result.problems.append(
                    f"{s['dag_id']} {s['run_id']}: the tab shows {name} {shown.get(name)}, the summary "
                    f"{s.get(name)}"
                )
        result.tabs += 1
    resp = http.get("/connectif/", headers=auth)
    if resp.status_code != 200:
        result.problems.append(f"/connectif/: HTTP {resp.status_code}")
    else:
        shown_reports = object_reports(resp.text)
        for obj in sorted({str(s.get("object")) for s in runs if s.get("object")}):
            mine = {(s.get("sent"), s.get("rejected")) for s in runs if s.get("object") == obj}
            if shown_reports.get(obj) not in mine:
                result.problems.append(
                    f"the Connectif page shows {obj} sent/rejected {shown_reports.get(obj)}, the summary "
                    f"{sorted(mine, key=str)}"
                )
            result.objects += 1
    _check_csv(http, auth, runs, result)
    anonymous = [http.get(p).status_code for p in ("/connectif/", "/connectif/rejected.csv?object=contacts")]
    result.anonymous_status = anonymous[0]
    if any(code not in (401, 403) for code in anonymous):
        result.problems.append(f"anonymous requests answered {anonymous}, not 401/403")
    return result


def _check_csv(http: httpx.Client, auth: dict[str, str], runs: list[dict[str, Any]], result: PagesCheck) -> None:
    contacts = [s for s in runs if s.get("object") == "contacts" and not s.get("dry_run")]
    if not contacts:
        return
    resp = http.get("/connectif/rejected.csv", params={"object": "contacts"}, headers=auth)
    if resp.status_code != 200:
        result.problems.append(f"/connectif/rejected.csv?object=contacts: HTTP {resp.status_code}")
        return
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    result.csv_rows = len(rows)
    run_ids = {r["run"] for r in rows}
    by_library_run = {s.get("library_run_id"): s for s in contacts}
    if len(run_ids) > 1:
        result.problems.append(f"rejected.csv?object=contacts mixes runs {sorted(run_ids)}")
        return
    if run_ids:
        result.csv_run = next(iter(run_ids))
        summary = by_library_run.get(result.csv_run)
    else:  # no row: the latest run must have rejected none
        summary = contacts[-1]
        result.csv_run = summary.get("library_run_id")
    if summary is None:
        result.problems.append(f"rejected.csv?object=contacts lists run {result.csv_run}, not a run of this demo")
        return
    if len(rows) != summary.get("rejected"):
        result.problems.append(
            f"rejected.csv?object=contacts lists {len(rows)} rows, the summary of {summary['run_id']} says "
            f"rejected {summary.get('rejected')}"
        )
    unexplained = [r["key"] for r in rows if not r["reason"].strip()]
    if unexplained:
        result.problems.append(f"rejected.csv rows without a reason: {unexplained[:5]}")
