"""The FastAPI app Airflow mounts at ``/connectif``: the Connectif page, the run tab, rejected rows and their CSV.

Security: Airflow does not protect plugin routes. Every route here depends on Airflow's ``get_user`` (the JWT of
the ``Authorization: Bearer`` header, or the ``_token`` cookie the UI sets, which the browser also sends to the
pages the UI shows in its iframe) and checks with the auth manager that the user may read the runs of the DAG
concerned (``DagAccessEntity.RUN``, method GET). Anonymous page requests are redirected to the login page, other
anonymous requests get 401; a user without access gets 403.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from connectif_provider.links import NAV_ROUTE, URL_PREFIX, run_tab_url
from connectif_provider.ui import data
from connectif_provider.ui.overview_queries import object_counts, run_histories
from connectif_provider.ui.render import (
    badge,
    e,
    kv,
    n,
    options,
    page,
    runs_chart,
    state_badge,
    structured,
    table,
    url,
    usage_chart,
    when,
)
from connectif_sync.contract import RunSummary, SyncObject
from connectif_sync.import_rejects import CONNECTIF_PREFIX

PAGE_SIZE = 50
STATIC = Path(__file__).parent / "static"

app = FastAPI(title="Connectif sync monitoring", docs_url=None, redoc_url=None, openapi_url=None)
app.mount("/static", StaticFiles(directory=STATIC), name="static")

UserDep = Annotated[BaseUser, Depends(get_user)]


@app.exception_handler(HTTPException)
async def _login_or_error(request: Request, exc: HTTPException) -> Response:
    """An anonymous browser is sent to Airflow's login page (and back here after it); others get the error."""
    wants_html = "text/html" in request.headers.get("accept", "")
    if exc.status_code == status.HTTP_401_UNAUTHORIZED and wants_html:
        from airflow.api_fastapi.app import get_auth_manager

        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=302)
    body = f"<p>{e(exc.detail)}</p>" if wants_html else None
    if body is not None:
        return HTMLResponse(page(str(exc.status_code), body, base=_base(request)), status_code=exc.status_code)
    return Response(
        content=f'{{"detail": "{e(exc.detail)}"}}', status_code=exc.status_code, media_type="application/json"
    )


def _base(request: Request) -> str:
    """Where this app is mounted (``/connectif`` behind any prefix of the API server)."""
    return str(request.scope.get("root_path") or "").rstrip("/")


def _may_read_runs(user: BaseUser, dag_id: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dag import DagModel

    return bool(
        get_auth_manager().is_authorized_dag(
            method="GET",
            access_entity=DagAccessEntity.RUN,
            details=DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id)),
            user=user,
        )
    )


def _require_object(user: BaseUser, name: str) -> SyncObject:
    """The object named in the request, once the user may read its DAG's runs (403 otherwise)."""
    obj = _parse_object(name)
    if not _may_read_runs(user, obj.dag_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"You may not read the runs of {obj.dag_id}")
    return obj


def _parse_object(name: str) -> SyncObject:
    if name == "erasure":
        return SyncObject.CONTACT_ERASURE
    try:
        return SyncObject(name)
    except ValueError:
        known = ", ".join(o.value for o in SyncObject)
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown object {name!r}; known: {known}") from None


def _masker() -> Any:
    return data.mask_emails if data.mask_emails_enabled() else (lambda v: v)


def _nav(base: str) -> str:
    return (
        f"<nav class=top><a href='{e(base)}/'>Connectif status</a>"
        f"<a href='{e(url(base, '/rejected', object='contacts'))}'>Rejected rows</a></nav>"
    )


# --------------------------------------------------------------------------------------------- overview


@app.get("/", response_class=HTMLResponse)
def overview(request: Request, user: UserDep) -> HTMLResponse:
    """Per object: last run, freshness, the last 30 runs, pending and suppressed rows; then the account."""
    base = _base(request)
    allowed = [o for o in data.objects() if _may_read_runs(user, o.dag_id)]
    if not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "You may not read the runs of any Connectif DAG")
    statuses = data.dag_statuses([o.dag_id for o in allowed])
    st = data.store()
    mask = _masker()
    histories = run_histories(st, [o.value for o in allowed], limit=30)
    all_counts = object_counts(st, [o.store_object for o in allowed])
    cards = []
    for obj in allowed:
        s = statuses[obj.dag_id]
        history = histories[obj.value]
        counts = all_counts[obj.store_object]
        last = history[0] if history else None
        tab = (
            f" · <a target=_top href='{e(run_tab_url(obj.dag_id, s.last_run_id, ''))}'>run tab</a>"
            if s.last_run_id
            else ""
        )
        rows = [
            ("last run", f"{state_badge(s.last_state)} {when(s.last_time)}{tab}"),
            ("freshness", state_badge(s.freshness) + (f" <small>{e(s.schedule)}</small>" if s.schedule else "")),
            ("last success", when(s.last_success)),
        ]
        if last is not None:
            rows.append(
                ("last report", f"sent {n(last.sent)} · rejected {n(last.rejected)} · {e(last.state)}")
            )
        browse = e(url(base, "/rejected", object=obj.value))
        rows += [
            ("rows pending retry", f"<a href='{browse}#pending'>{n(counts['pending'])}</a>"),
            ("suppressed keys", f"<a href='{browse}#suppressed'>{n(counts['suppressed'])}</a>"),
        ]
        cards.append(
            f"<section class=card data-object='{e(obj.value)}'><h3><a target=_top href='/dags/{e(obj.dag_id)}'>"
            f"{e(obj.label)}</a> <small>{e(obj.dag_id)}</small></h3>{kv(rows)}"
            f"<div>{runs_chart(list(reversed(history)))}</div></section>"
        )
    account = data.account_status()
    queue = (
        f"{n(account.queued)} queued · {n(account.in_progress)} in progress "
        f"<small>(of 10; as of {when(account.checked_at)}, cached {int(data.ACCOUNT_CACHE_SECONDS)} s)</small>"
    )
    acc_rows = [
        ("imports", queue),
        ("requests, last hour", n(account.requests_last_hour)),
        ("429 answers, last hour", n(account.limited_last_hour)),
        ("shared budget", f"{n(account.limit_per_window)} per {n(account.window_seconds)} s"),
    ]
    err = f"<p class=muted>{e(mask(account.error))}</p>" if account.error else ""
    body = (
        f"{_nav(base)}<h1>Connectif sync</h1><div class=grid>{''.join(cards)}</div>"
        f"<h2>Account</h2><section class=card id=account>{kv(acc_rows)}"
        f"<div>{usage_chart(account.usage, account.limit_per_window)}</div>{err}</section>"
    )
    return HTMLResponse(page("Connectif sync", body, base=base))


# ---------------------------------------------------------------------------------------------- run tab


@app.get(
    "/runs/{dag_id}/{run_id:path}",
    response_class=HTMLResponse,
    dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))],
)
def run_tab(request: Request, dag_id: str, run_id: str) -> HTMLResponse:
    """One run: counts, reasons, notes, imports with their rejected rows, requests spent, a dry run's plan."""
    base = _base(request)
    obj = SyncObject.from_dag_id(dag_id)
    if obj is None:  # Airflow shows this tab on every DAG's runs: its external views have no per-DAG filter
        connectif_page = f"{base.removesuffix(URL_PREFIX)}/plugin/{NAV_ROUTE}"
        body = (
            f"<h1>Connectif sync</h1><p><b>{e(dag_id)} is not a Connectif sync</b>: this tab shows the runs of "
            f"the <code>connectif_*</code> DAGs ({', '.join(e(o.dag_id) for o in SyncObject)}). Airflow adds it "
            "to the runs of every DAG. What the Connectif syncs did is on the "
            f"<a href='{e(connectif_page)}' target=_top>Connectif page</a>.</p>"
        )
        return HTMLResponse(page("Connectif sync", body, base=base))
    summary = data.store().run_summary(dag_id, run_id)
    if summary is None:
        state = data.dag_run_state(dag_id, run_id)
        if state == "failed":
            text = (
                "This run failed before its <code>report</code> task could record a summary: see its failed tasks "
                "in the grid. Rows it did not send go again with the next run."
            )
        else:
            text = (
                "This run has not reported yet (its <code>report</code> task writes the summary when it ends). "
                "Reload the tab once it ran."
            )
        body = f"<h1>{e(dag_id)} · {e(run_id)} {state_badge(state)}</h1><p>{text}</p>"
        return HTMLResponse(page("Connectif sync", body, base=base))
    return HTMLResponse(page(f"{dag_id} {run_id}", _run_body(base, summary), base=base))


def _run_body(base: str, s: RunSummary) -> str:
    mask = _masker()
    figures = [("to send", s.to_send), ("sent", s.sent), ("changed", s.changed), ("unchanged", s.unchanged),
               ("rejected", s.rejected)]  # fmt: skip
    figs = "".join(f"<div class=fig data-figure='{k}'><small>{k}</small><b>{n(v)}</b></div>" for k, v in figures)
    spent = s.requests_spent
    counts = [(name, n(getattr(s, name))) for name in (
        "extracted", "new", "changed", "unchanged", "deleted", "invalid", "duplicate", "suppressed",
        "rejected_by_connectif", "files", "bytes")]  # fmt: skip
    counts += [("imports", n(s.imports)), ("API requests spent", n(spent) if not s.dry_run else "— (dry run)")]
    reject_link = url(base, "/rejected", object=s.object.value, run=s.library_run_id or "")
    reasons = table(
        ["reason", "rows"],
        [
            (_reason_link(base, s, r, mask), n(c))
            for r, c in sorted(s.rejected_by_reason.items(), key=lambda kv: -kv[1])
        ],
        numeric=(1,),
        tid="reasons",
    ) if s.rejected_by_reason else "<p class=muted>No row was rejected.</p>"  # fmt: skip
    imports = [
        (
            e(i.import_id),
            state_badge(i.status if i.status != "finished" else "success").replace(">success<", ">finished<"),
            n(i.total), n(i.success), n(i.errors),
            "—" if i.duration_s is None else f"{i.duration_s:,.1f} s",
            _import_rejects(i.rejected_rows, i.errors, mask),
        )
        for i in s.import_outcomes
    ]  # fmt: skip
    plan = ""
    if s.dry_run and s.plan:
        plan = "<h2>Plan (dry run)</h2>" + kv([(str(k), structured(v, mask)) for k, v in s.plan.items()], tid="plan")
    notes = "".join(f"<li>{e(mask(x))}</li>" for x in s.notes) or "<li class=muted>none</li>"
    extra = kv([(k, structured(v, mask)) for k, v in s.extra.items()], tid="extra") if s.extra else ""
    return (
        f"<h1>{e(s.object.label)} · <small>{e(s.run_id)}</small> {state_badge(s.state.value)}"
        f"{' ' + badge('dry run', 'info') if s.dry_run else ''}</h1>"
        f"<div class=figures id=figures>{figs}</div>"
        f"<div class=grid><section class=card><h3>Counts</h3>{kv(counts, tid='counts')}{extra}</section>"
        f"<section class=card><h3>Rejection reasons</h3>{reasons}<p><a href='{e(reject_link)}'>Browse the rejected "
        f"rows</a> · <a href='{e(url(base, '/rejected.csv', object=s.object.value, run=s.library_run_id or ''))}'>"
        f"download CSV</a></p><h3>Notes</h3><ul id=notes>{notes}</ul></section></div>"
        f"<h2>Imports</h2>"
        + (table(["import", "status", "total", "success", "errors", "duration", "rows Connectif rejected"], imports,
                 numeric=(2, 3, 4, 5), tid="imports") if imports else "<p class=muted>No import in this run.</p>")
        + plan
    )  # fmt: skip


def _reason_link(base: str, s: RunSummary, label: str, mask: Any) -> str:
    href = url(base, "/rejected", object=s.object.value, run=s.library_run_id or "", reason=_reason_of(label))
    return f"<a href='{e(href)}'>{e(mask(label))}</a>"


def _reason_of(label: str) -> str:
    """The stored ``reason`` of a ``"field: reason"`` label of the library's counts."""
    if label.startswith(CONNECTIF_PREFIX):  # filed under the label itself (connectif_sync.import_rejects)
        return label
    return label.split(": ", 1)[1] if ": " in label else ""


#: Characters of a rejected value the page shows (the CSV has them all): a 300-character name fits no table.
VALUE_CHARS = 80


def _cut(value: Any) -> str:
    text = None if value is None else str(value)
    if text is None or len(text) <= VALUE_CHARS:
        return e(text)
    return f"{e(text[:VALUE_CHARS])}… <small>({len(text):,} characters; the CSV has them all)</small>"


def _import_rejects(rows: list[dict[str, Any]], errors: int, mask: Any) -> str:
    if not rows:
        return "—"
    body = table(["line", "key", "field", "error"],
                 [(n(r.get("line")), e(mask(r.get("key"))), e(r.get("field")), e(mask(r.get("error")))) for r in rows],
                 numeric=(0,))  # fmt: skip
    more = f"<small>first {len(rows)} of {errors:,}</small>" if errors > len(rows) else ""
    return f"<details><summary>{len(rows):,} rows</summary>{body}{more}</details>"


# ------------------------------------------------------------------------------------------ rejected


@app.get("/rejected", response_class=HTMLResponse)
def rejected(
    request: Request,
    user: UserDep,
    object: str = Query("contacts"),
    run: str | None = None,
    field: str | None = None,
    reason: str | None = None,
    key: str | None = None,
    after: int | None = None,
    pending_after: str | None = None,
    suppressed_after: str | None = None,
) -> HTMLResponse:
    """A run's rejected rows (filters, key search, keyset pages), the rows pending retry, the suppression list."""
    obj = _require_object(user, object)
    base = _base(request)
    st = data.store()
    mask = _masker()
    runs = st.rejected_run_ids(obj.store_object)
    run = run or (runs[0] if runs else None)
    rows = (
        st.rejected_page(obj.store_object, run, field=field, reason=reason, key=key, after_id=after, limit=PAGE_SIZE)
        if run
        else []
    )
    filters = {"object": obj.value, "run": run, "field": field, "reason": reason, "key": key}
    next_link = (
        f"<a id=next href='{e(url(base, '/rejected', **filters, after=rows[-1]['id']))}'>next {PAGE_SIZE} →</a>"
        if len(rows) == PAGE_SIZE
        else ""
    )
    first_link = f"<a href='{e(url(base, '/rejected', **filters))}'>← first page</a> " if after else ""
    object_opts = options([(o.value, o.label) for o in SyncObject if o is not SyncObject.EXPORTS], obj.value)
    run_opts = options([(r, r) for r in runs], run)
    form = (
        f"<form class=filters method=get action='{e(base)}/rejected'>"
        f"<label>object<select name=object>{object_opts}</select></label>"
        f"<label>run<select name=run>{run_opts}</select></label>"
        f"<label>field<input name=field value='{e(field or '')}' size=12></label>"
        f"<label>reason<input name=reason value='{e(reason or '')}' size=28></label>"
        f"<label>key (exact, or prefix*)<input name=key value='{e(key or '')}' size=24></label>"
        f"<button type=submit>Filter</button>"
        f"<a href='{e(url(base, '/rejected.csv', **filters))}' id=csv>Download CSV</a></form>"
    )
    table_html = table(
        ["key", "source row", "field", "reason", "value"],
        [(e(mask(r["key"])), e(mask(r["source_ref"])), e(r["field"]), e(r["reason"]), _cut(mask(r["value"])))
         for r in rows],
        tid="rejected",
    ) if rows else "<p class=muted>No rejected row matches.</p>"  # fmt: skip
    pending = st.pending_page(obj.store_object, after_key=pending_after, limit=PAGE_SIZE)
    pending_html = table(
        ["key", "file line", "reason", "since"],
        [(e(mask(p["key"])), n(p["line"]), e(mask(p["reason"])), e(p["recorded_at"])) for p in pending],
        numeric=(1,),
        tid="pending-rows",
    ) if pending else "<p class=muted>No row waits for a retry.</p>"  # fmt: skip
    if len(pending) == PAGE_SIZE:
        more = url(base, "/rejected", **filters, pending_after=pending[-1]["key"])
        pending_html += f"<a href='{e(more)}#pending'>more →</a>"
    suppressed = st.suppressed_page("contacts" if obj is SyncObject.CONTACT_ERASURE else obj.store_object,
                                    after_key=suppressed_after, limit=PAGE_SIZE)  # fmt: skip
    suppressed_html = table(
        ["key", "reason", "since"],
        [(e(mask(s["key"])), e(mask(s["reason"])), e(s["suppressed_at"])) for s in suppressed],
        tid="suppressed-keys",
    ) if suppressed else "<p class=muted>No key is suppressed.</p>"  # fmt: skip
    if len(suppressed) == PAGE_SIZE:
        more = url(base, "/rejected", **filters, suppressed_after=suppressed[-1]["key"])
        suppressed_html += f"<a href='{e(more)}#suppressed'>more →</a>"
    body = (
        f"{_nav(base)}<h1>Rejected rows · {e(obj.label)}</h1>"
        "<p class=muted>The rows a run set aside before sending, and those Connectif rejected in its imports "
        "(reason <q>Connectif: …</q>, source row: the file sent and its line); kept for the last runs of each "
        "object. Rows Connectif rejected also wait under <a href='#pending'>pending retry</a>: the next run sends "
        "them again.</p>"
        f"{form}{table_html}<p>{first_link}{next_link}</p>"
        f"<h2 id=pending>Pending retry</h2>{pending_html}<h2 id=suppressed>Suppressed keys</h2>{suppressed_html}"
    )
    return HTMLResponse(page("Rejected rows", body, base=base))


@app.get("/rejected.csv")
def rejected_csv(
    user: UserDep,
    object: str = Query(..., description="contacts, products, purchases, coupons or contact_erasure"),
    run: str | None = None,
    field: str | None = None,
    reason: str | None = None,
    key: str | None = None,
) -> StreamingResponse:
    """Every rejected row of a run (default: the object's latest) as CSV: key, source row, field, reason, value."""
    obj = _require_object(user, object)
    st = data.store()
    run = run or next(iter(st.rejected_run_ids(obj.store_object)), None)
    mask = _masker()

    def lines() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["key", "source_row", "field", "reason", "value", "run"])
        after: int | None = None
        while run is not None:
            page_rows = st.rejected_page(
                obj.store_object, run, field=field, reason=reason, key=key, after_id=after, limit=5000
            )
            for r in page_rows:
                writer.writerow([mask(r["key"]), mask(r["source_ref"]), r["field"], r["reason"], mask(r["value"]),
                                 r["run_id"]])  # fmt: skip
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
            if len(page_rows) < 5000:
                break
            after = int(page_rows[-1]["id"])

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="connectif-rejected-{obj.value}-{stamp}.csv"'},
    )


@app.get("/api/runs/{dag_id}/{run_id:path}", dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))])
def run_summary_json(dag_id: str, run_id: str) -> dict[str, Any]:
    """The run's recorded summary as JSON (what the tab shows), for scripts and checks."""
    summary = data.store().run_summary(dag_id, run_id)
    if summary is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no summary recorded for {dag_id} run {run_id}")
    return summary.as_dict()
