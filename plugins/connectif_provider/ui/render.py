"""HTML and SVG of the pages, built on the server with escaping everywhere: no template engine, no script, no CDN
(users run Airflow in closed networks), one small inline style sheet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

STYLE = """
:root{color-scheme:light dark;--fg:#1a202c;--muted:#5f6b7a;--bg:#fff;--card:#f7f9fb;--line:#d9dee5;
--ok:#2f9e44;--warn:#e67700;--bad:#e03131;--info:#1971c2;--sent:#1971c2;--changed:#7048e8;--unchanged:#868e96;
--rejected:#e03131}
@media (prefers-color-scheme:dark){:root{--fg:#e9ecef;--muted:#adb5bd;--bg:#1a1b1e;--card:#25262b;--line:#373a40}}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg);margin:0;padding:16px 20px}h1{font-size:20px;margin:0 0 12px}h2{font-size:16px;margin:18px 0 8px}
h3{font-size:14px;margin:0 0 6px}a{color:var(--info)}small,.muted{color:var(--muted)}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px}
.badge{display:inline-block;white-space:nowrap;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;
color:#fff;
background:var(--muted)}.b-ok{background:var(--ok)}.b-warn{background:var(--warn)}.b-bad{background:var(--bad)}
.b-info{background:var(--info)}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid var(--line);vertical-align:top}td,li{overflow-wrap:anywhere}
th{white-space:nowrap;font-weight:600;color:var(--muted);font-size:12px}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.kv td:first-child{color:var(--muted);width:45%}
.figures{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}.fig{background:var(--card);border:1px solid var(--line);
border-radius:8px;padding:8px 12px;min-width:110px}.fig b{display:block;font-size:20px}
form.filters{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin:8px 0}form.filters label{display:flex;
flex-direction:column;font-size:12px;color:var(--muted)}input,select{font:inherit;padding:3px 6px;border:1px solid
var(--line);border-radius:4px;background:var(--bg);color:var(--fg)}button{font:inherit;padding:4px 12px;
border-radius:4px;border:1px solid var(--info);background:var(--info);color:#fff;cursor:pointer}code{font-size:12px}
svg text{font:11px system-ui,sans-serif;fill:var(--muted)}nav.top{margin-bottom:10px}nav.top a{margin-right:12px}
table.nested{font-size:12px}table.nested td{padding:1px 6px;border-bottom:0;text-align:left}
"""

SERIES = (("sent", "var(--sent)"), ("changed", "var(--changed)"), ("unchanged", "var(--unchanged)"),
          ("rejected", "var(--rejected)"))  # fmt: skip


def e(value: Any) -> str:
    """Escaped text; None shows as an em dash."""
    return "—" if value is None else escape(str(value))


def n(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return e(value)


def when(value: datetime | None) -> str:
    return "—" if value is None else e(value.strftime("%Y-%m-%d %H:%M UTC"))


def url(base: str, path: str, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{base}{path}" + (f"?{query}" if query else "")


def page(title: str, body: str, *, base: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{e(title)}</title>"
        f"<link rel=icon href='{e(base)}/static/connectif.svg'><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def badge(text: str, kind: str) -> str:
    return f"<span class='badge b-{kind}' data-badge='{e(text)}'>{e(text)}</span>"


STATE_KIND = {"success": "ok", "failed": "bad", "running": "info", "queued": "info", "incomplete": "warn",
              "planned": "info", "on time": "ok", "late": "warn", "failing": "bad", "paused": "warn"}  # fmt: skip


def state_badge(state: str | None) -> str:
    return badge(state or "no run", STATE_KIND.get(state or "", "none"))


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[int] = (), tid: str = "") -> str:
    """A table of already-escaped cells; ``numeric`` columns are right-aligned."""
    head = "".join(f"<th class='{'n' if i in numeric else ''}'>{e(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td class='{'n' if i in numeric else ''}'>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    ident = f" id='{e(tid)}'" if tid else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def runs_chart(runs: Sequence[Any], *, width: int = 340, row_h: int = 26) -> str:
    """Small multiples: one bar row per count (sent, changed, unchanged, rejected) over the runs, oldest on the
    left, each row on its own scale so that 12 rejects still show next to a million unchanged rows."""
    if not runs:
        return "<p class=muted>No run recorded yet.</p>"
    label_w, pad = 78, 4
    slots = max(len(runs), 1)
    bar_w = max((width - label_w - 48) / slots, 2.0)
    parts = [f"<svg role=img aria-label='last {len(runs)} runs' width='{width}' height='{row_h * 4 + 14}'>"]
    for row, (name, colour) in enumerate(SERIES):
        values = [int(getattr(r, name) or 0) for r in runs]
        top = max(values) or 1
        y0 = row * row_h
        parts.append(f"<text x='0' y='{y0 + row_h - 9}'>{name}</text>")
        parts.append(f"<text x='{width - 44}' y='{y0 + row_h - 9}'>{top:,}</text>" if max(values) else "")
        for i, v in enumerate(values):
            h = 0.0 if v == 0 else max((row_h - pad - 4) * v / top, 1.5)
            x = label_w + i * bar_w
            title = f"{runs[i].run_id}: {name} {v:,}"
            parts.append(
                f"<rect x='{x:.1f}' y='{y0 + row_h - pad - h:.1f}' width='{max(bar_w - 1.5, 1):.1f}' "
                f"height='{h:.1f}' fill='{colour}'><title>{e(title)}</title></rect>"
            )
        parts.append(
            f"<line x1='{label_w}' x2='{width - 48}' y1='{y0 + row_h - pad}' y2='{y0 + row_h - pad}' "
            "stroke='currentColor' stroke-opacity='.2'/>"
        )
    parts.append(f"<text x='{label_w}' y='{row_h * 4 + 12}'>oldest</text>")
    parts.append(f"<text x='{width - 86}' y='{row_h * 4 + 12}'>latest run</text></svg>")
    return "".join(parts)


def usage_chart(
    usage: Sequence[tuple[int, int, int]], limit: int | None, *, width: int = 960, height: int = 110
) -> str:
    """Requests per minute over the last hour (bars), 429 answers (red marks), and the budget (dashed line)."""
    if not usage:
        return "<p class=muted>No bucket data.</p>"
    top = max([r for _, r, _ in usage] + [limit or 0, 1])
    left, bottom = 34, 16
    bar_w = (width - left) / len(usage)
    plot_h = height - bottom - 4
    parts = [f"<svg role=img aria-label='requests per minute, last hour' width='{width}' height='{height}'>"]
    parts.append(f"<text x='0' y='12'>{top}</text><text x='0' y='{height - bottom}'>0</text>")
    for i, (minute, req, lim) in enumerate(usage):
        h = plot_h * req / top
        x = left + i * bar_w
        stamp = datetime.fromtimestamp(minute * 60, UTC).strftime("%H:%M UTC")
        parts.append(
            f"<rect x='{x:.1f}' y='{4 + plot_h - h:.1f}' width='{max(bar_w - 1, 1):.1f}' height='{h:.1f}' "
            f"fill='var(--sent)'><title>{stamp}: {req} requests, {lim} answered 429</title></rect>"
        )
        if lim:
            parts.append(f"<rect x='{x:.1f}' y='4' width='{max(bar_w - 1, 1):.1f}' height='4' fill='var(--bad)'/>")
    if limit:
        y = 4 + plot_h - plot_h * limit / top
        parts.append(
            f"<line x1='{left}' x2='{width}' y1='{y:.1f}' y2='{y:.1f}' stroke='var(--warn)' stroke-dasharray='4 3'/>"
            f"<text x='{width - 130}' y='{y + 13:.1f}'>budget {limit} per window</text>"
        )
    parts.append(f"<text x='{left}' y='{height - 2}'>{len(usage)} min ago</text>")
    parts.append(f"<text x='{width - 30}' y='{height - 2}'>now</text></svg>")
    return "".join(parts)


def kv(rows: Iterable[tuple[str, str]], tid: str = "", cls: str = "kv") -> str:
    """Key/value rows: keys are escaped here, values are HTML already."""
    ident = f" id='{e(tid)}'" if tid else ""
    body = "".join(f"<tr data-key='{e(k)}'><td>{e(k)}</td><td class=n>{v}</td></tr>" for k, v in rows)
    return f"<table class='{e(cls)}'{ident}><tbody>{body}</tbody></table>"


def options(values: Iterable[tuple[str, str]], selected: str | None) -> str:
    return "".join(
        f"<option value='{e(v)}'{' selected' if v == selected else ''}>{e(label)}</option>" for v, label in values
    )


Masker = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


#: Below this depth a dict is shown inline (``key: value · key: value``): a table in a table in a table reads badly.
NESTED_TABLE_DEPTH = 1


def structured(value: Any, mask: Masker = _same, *, depth: int = 0) -> str:
    """A value of a summary's ``extra`` or ``plan`` as escaped HTML a person reads: a dict as key/value rows (one
    level of nested table, deeper dicts inline), a list as its items, booleans as yes/no, numbers grouped.
    The values come from the data (coupon set names, table names, who decided), so every text is escaped and
    goes through ``mask`` (the UI's email masking)."""
    if isinstance(value, Mapping):
        if not value:
            return "<span class=muted>none</span>"
        pairs = [(str(mask(k)), structured(v, mask, depth=depth + 1)) for k, v in value.items()]
        if depth >= NESTED_TABLE_DEPTH:
            return " · ".join(f"{e(k)}: {v}" for k, v in pairs)
        return kv(pairs, cls="kv nested")
    if isinstance(value, list | tuple | set | frozenset):
        if not value:
            return "<span class=muted>none</span>"
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        shown = [structured(v, mask, depth=depth + 1) for v in items]
        one_per_line = any(isinstance(v, Mapping) for v in items) or any("," in x for x in shown)
        return ("<br>" if one_per_line else ", ").join(shown)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return n(value)
    return e(mask(value))
