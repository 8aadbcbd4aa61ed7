"""SQLite storage of the emulator: one code path for ``--state FILE`` and for the in-memory default.

A single connection guarded by a re-entrant lock serves the event loop and the background workers; every
statement is short, so the lock is never held for long. Resources keep their API fields in a JSON column
(the shape the API answers with), plus the few columns that are queried.
"""

from __future__ import annotations

import itertools
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

DEFAULT_ACCOUNT = "default"
DEFAULT_DOMAINS = ["example.com"]

IMPORT_SCOPES = ["import:read", "import:write", "import:delete"]
EXPORT_SCOPES = ["export:read", "export:write"]
ALL_SCOPES = [
    *IMPORT_SCOPES,
    *EXPORT_SCOPES,
    "contact:read",
    "contact:write",
    "contact:delete",
    "product:read",
    "product:write",
    "product:delete",
    "purchase:read",
    "purchase:write",
    "purchase:delete",
    "coupon-set:read",
    "workflow:read",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, blocked INTEGER NOT NULL DEFAULT 0, domains TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    key TEXT PRIMARY KEY, account_id TEXT NOT NULL, scopes TEXT NOT NULL, blocked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS imports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, account_id TEXT NOT NULL,
    status TEXT NOT NULL, data TEXT NOT NULL, file_path TEXT);
CREATE INDEX IF NOT EXISTS imports_account ON imports(account_id, status);
CREATE TABLE IF NOT EXISTS import_errors (
    import_id TEXT NOT NULL, line INTEGER NOT NULL, field TEXT NOT NULL, error TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS import_errors_import ON import_errors(import_id);
CREATE TABLE IF NOT EXISTS exports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, account_id TEXT NOT NULL,
    status TEXT NOT NULL, data TEXT NOT NULL, file_path TEXT);
CREATE INDEX IF NOT EXISTS exports_account ON exports(account_id, status);
CREATE TABLE IF NOT EXISTS contacts (
    account_id TEXT NOT NULL, email TEXT NOT NULL, data TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (account_id, email));
CREATE TABLE IF NOT EXISTS products (
    account_id TEXT NOT NULL, product_id TEXT NOT NULL, data TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (account_id, product_id));
CREATE TABLE IF NOT EXISTS purchases (
    account_id TEXT NOT NULL, purchase_id TEXT NOT NULL, contact_email TEXT NOT NULL, data TEXT NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY (account_id, purchase_id));
CREATE INDEX IF NOT EXISTS purchases_contact ON purchases(account_id, contact_email);
CREATE TABLE IF NOT EXISTS activities (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, account_id TEXT NOT NULL,
    contact_email TEXT NOT NULL, type TEXT NOT NULL, date TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS activities_contact ON activities(account_id, contact_email);
CREATE TABLE IF NOT EXISTS coupon_sets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, account_id TEXT NOT NULL,
    data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS coupon_codes (
    set_id TEXT NOT NULL, code TEXT NOT NULL, added_at REAL NOT NULL, assigned_at REAL,
    PRIMARY KEY (set_id, code));
CREATE TABLE IF NOT EXISTS workflows (
    id TEXT PRIMARY KEY, account_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_DATA_TABLES = [
    "accounts",
    "api_keys",
    "imports",
    "import_errors",
    "exports",
    "contacts",
    "products",
    "purchases",
    "activities",
    "coupon_sets",
    "coupon_codes",
    "workflows",
]


_ID_PREFIX = secrets.token_hex(5)
_ID_COUNTER = itertools.count(secrets.randbelow(2**20))


def new_id() -> str:
    """A 24-hex id shaped like Connectif's object ids: 4 bytes of time, 5 random per process, a 3-byte counter."""
    return f"{int(time.time()):08x}{_ID_PREFIX}{next(_ID_COUNTER) % 2**24:06x}"


def now_iso() -> str:
    """Current UTC time, ISO 8601 with milliseconds and ``Z`` as Connectif writes it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_ids(count: int) -> list[str]:
    """``count`` fresh ids at once (imports): one clock read, a block of the counter."""
    head = f"{int(time.time()):08x}{_ID_PREFIX}"
    start = next(_ID_COUNTER)
    # Advances the shared counter by count - 1 in one C-level step (atomic under the GIL).
    if count > 1:
        next(itertools.islice(_ID_COUNTER, count - 2, None))
    return [f"{head}{n % 2**24:06x}" for n in range(start, start + count)]


# msgspec instead of the json module: ~10x faster to encode and ~3x to decode, which is most of what an
# import of half a million rows spent per row (same JSON text: compact, non-ASCII kept as is).
_ENCODE = msgspec.json.Encoder().encode
_loads = msgspec.json.Decoder().decode


def _dumps(value: Any) -> str:
    return _ENCODE(value).decode()


class Store:
    """All persistent state. Methods are thread-safe; ``generation`` changes on every reset so that
    background work started before a reset never writes into the fresh state."""

    def __init__(self, path: Path | None, files_dir: Path) -> None:
        self.path = path
        self.files_dir = files_dir
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, isolation_level=None)
        if path:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        self.generation = 0
        self._seq = self._max_seq()
        # key -> (key record, account): every API request needs both, and each SQLite call lets the GIL go,
        # which a busy import thread then holds for up to a switch interval.
        self._auth_cache: dict[str, tuple[dict[str, Any], dict[str, Any]] | None] = {}
        (files_dir / "imports").mkdir(parents=True, exist_ok=True)
        (files_dir / "exports").mkdir(parents=True, exist_ok=True)

    def _max_seq(self) -> int:
        values = [
            self.conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {table}").fetchone()[0]
            for table in ("contacts", "products", "purchases")
        ]
        return max(values)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction under the store lock."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row | tuple[Any, ...]]:
        with self.lock:
            return list(self.conn.execute(sql, tuple(params)).fetchall())

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    # --- reset and seeding -------------------------------------------------------------------------------
    def wipe(self) -> None:
        """Delete every row and stored file (admin reset)."""
        with self.tx() as conn:
            for table in _DATA_TABLES:
                conn.execute(f"DELETE FROM {table}")
            self.generation += 1
            self._auth_cache.clear()
        for sub in ("imports", "exports"):
            shutil.rmtree(self.files_dir / sub, ignore_errors=True)
            (self.files_dir / sub).mkdir(parents=True, exist_ok=True)

    # --- accounts and keys ---------------------------------------------------------------------------------
    def put_account(self, account_id: str, name: str, domains: list[str], blocked: bool = False) -> dict[str, Any]:
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO accounts(id, name, blocked, domains) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET name=excluded.name, blocked=excluded.blocked, domains=excluded.domains",
                (account_id, name, int(blocked), _dumps(domains)),
            )
            self._auth_cache.clear()
        return {"id": account_id, "name": name, "blocked": blocked, "authorizedDomains": domains}

    def get_account(self, account_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT id, name, blocked, domains FROM accounts WHERE id = ?", (account_id,))
        if not rows:
            return None
        row = rows[0]
        return {"id": row[0], "name": row[1], "blocked": bool(row[2]), "authorizedDomains": _loads(row[3])}

    def list_accounts(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT id FROM accounts ORDER BY id")
        return [acc for (account_id,) in rows if (acc := self.get_account(account_id))]

    def put_key(self, key: str, account_id: str, scopes: list[str], blocked: bool = False) -> dict[str, Any]:
        with self.tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO api_keys(key, account_id, scopes, blocked) VALUES (?, ?, ?, ?)",
                (key, account_id, _dumps(scopes), int(blocked)),
            )
            self._auth_cache.clear()
        return {"key": key, "accountId": account_id, "scopes": scopes, "blocked": blocked}

    def get_key(self, key: str) -> dict[str, Any] | None:
        rows = self.query("SELECT key, account_id, scopes, blocked FROM api_keys WHERE key = ?", (key,))
        if not rows:
            return None
        row = rows[0]
        return {"key": row[0], "accountId": row[1], "scopes": _loads(row[2]), "blocked": bool(row[3])}

    def authenticate(self, key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(key record, account) for an API key, or None when the key or its account is unknown (cached)."""
        with self.lock:
            if key in self._auth_cache:
                return self._auth_cache[key]
            record = self.get_key(key)
            account = self.get_account(record["accountId"]) if record else None
            found = (record, account) if record and account else None
            if len(self._auth_cache) > 10_000:
                self._auth_cache.clear()
            self._auth_cache[key] = found
            return found

    def list_keys(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT key FROM api_keys ORDER BY key")
        return [k for (key,) in rows if (k := self.get_key(key))]

    # --- generic JSON resources with a status (imports, exports) ------------------------------------------
    def insert_job(self, table: str, account_id: str, data: dict[str, Any], file_path: str | None) -> None:
        with self.tx() as conn:
            conn.execute(
                f"INSERT INTO {table}(id, account_id, status, data, file_path) VALUES (?, ?, ?, ?, ?)",
                (data["id"], account_id, data["status"], _dumps(data), file_path),
            )

    def count_jobs(self, table: str, account_id: str, statuses: list[str]) -> int:
        marks = ",".join("?" * len(statuses))
        rows = self.query(
            f"SELECT COUNT(*) FROM {table} WHERE account_id = ? AND status IN ({marks})",
            (account_id, *statuses),
        )
        return int(rows[0][0])

    def get_job(self, table: str, job_id: str, account_id: str | None = None) -> dict[str, Any] | None:
        sql = f"SELECT data FROM {table} WHERE id = ?"
        params: tuple[Any, ...] = (job_id,)
        if account_id is not None:
            sql += " AND account_id = ?"
            params += (account_id,)
        rows = self.query(sql, params)
        return _loads(rows[0][0]) if rows else None

    def job_file(self, table: str, job_id: str) -> str | None:
        rows = self.query(f"SELECT file_path FROM {table} WHERE id = ?", (job_id,))
        return rows[0][0] if rows else None

    def set_job_file(self, table: str, job_id: str, file_path: str | None) -> None:
        with self.tx() as conn:
            conn.execute(f"UPDATE {table} SET file_path = ? WHERE id = ?", (file_path, job_id))

    def update_job(self, table: str, job_id: str, generation: int | None = None, **changes: Any) -> bool:
        """Merge ``changes`` into the resource; False when it is gone (deleted, or a reset happened)."""
        with self.tx() as conn:
            if generation is not None and generation != self.generation:
                return False
            rows = conn.execute(f"SELECT data FROM {table} WHERE id = ?", (job_id,)).fetchall()
            if not rows:
                return False
            data = _loads(rows[0][0])
            data.update({k: v for k, v in changes.items()})
            conn.execute(
                f"UPDATE {table} SET data = ?, status = ? WHERE id = ?",
                (_dumps(data), data["status"], job_id),
            )
            return True

    def list_jobs(self, table: str, account_id: str | None, limit: int, skip: int) -> tuple[list[dict[str, Any]], int]:
        where, params = ("WHERE account_id = ?", [account_id]) if account_id is not None else ("", [])
        total = int(self.query(f"SELECT COUNT(*) FROM {table} {where}", params)[0][0])
        rows = self.query(
            f"SELECT data FROM {table} {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*params, limit, skip],
        )
        return [_loads(r[0]) for r in rows], total

    def delete_job(self, table: str, job_id: str) -> None:
        with self.tx() as conn:
            conn.execute(f"DELETE FROM {table} WHERE id = ?", (job_id,))
            if table == "imports":
                conn.execute("DELETE FROM import_errors WHERE import_id = ?", (job_id,))

    def oldest_job(self, table: str, account_id: str, status: str) -> dict[str, Any] | None:
        rows = self.query(
            f"SELECT data FROM {table} WHERE account_id = ? AND status = ? ORDER BY seq LIMIT 1",
            (account_id, status),
        )
        return _loads(rows[0][0]) if rows else None

    def accounts_with_jobs(self, table: str, statuses: list[str]) -> list[str]:
        marks = ",".join("?" * len(statuses))
        rows = self.query(f"SELECT DISTINCT account_id FROM {table} WHERE status IN ({marks})", statuses)
        return [r[0] for r in rows]

    def requeue_interrupted(self) -> None:
        """After a restart, work that was inProgress starts again from the beginning."""
        for table in ("imports", "exports"):
            for (job_id,) in self.query(f"SELECT id FROM {table} WHERE status = 'inProgress'"):
                counts = {"success": 0, "errors": 0} if table == "imports" else {"progress": 0}
                self.update_job(table, job_id, status="queued", startedAt=None, **counts)
                if table == "imports":
                    with self.tx() as conn:
                        conn.execute("DELETE FROM import_errors WHERE import_id = ?", (job_id,))

    # --- import error report ---------------------------------------------------------------------------------
    def add_import_errors(self, import_id: str, errors: list[tuple[int, str, str]], generation: int) -> bool:
        with self.tx() as conn:
            if generation != self.generation:
                return False
            conn.executemany(
                "INSERT INTO import_errors(import_id, line, field, error) VALUES (?, ?, ?, ?)",
                [(import_id, line, field, err) for line, field, err in errors],
            )
            return True

    def import_errors(self, import_id: str) -> Iterator[tuple[int, str, str]]:
        """The error report rows in file order (streamed in pages to keep memory flat)."""
        last = -1
        while True:
            rows = self.query(
                "SELECT rowid, line, field, error FROM import_errors WHERE import_id = ? AND rowid > ? "
                "ORDER BY rowid LIMIT 5000",
                (import_id, last),
            )
            if not rows:
                return
            for row in rows:
                yield int(row[1]), str(row[2]), str(row[3])
            last = int(rows[-1][0])

    # --- keyed JSON entities: contacts, products, purchases ------------------------------------------------
    def get_entity(self, table: str, key_col: str, account_id: str, key: str) -> dict[str, Any] | None:
        rows = self.query(
            f"SELECT data FROM {table} WHERE account_id = ? AND {key_col} = ?",
            (account_id, key),
        )
        return _loads(rows[0][0]) if rows else None

    def get_entities(self, table: str, key_col: str, account_id: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Existing entities among ``keys`` (batched lookups for imports).

        One statement answering one row: the sqlite3 module gives the GIL up around every step, and a
        step per found row let API requests and the import thread hand the GIL to each other thousands of
        times per batch, each hand-over waiting up to a switch interval.
        """
        if not keys:
            return {}
        rows = self.query(
            f"SELECT json_group_object({key_col}, json(data)) FROM {table} "
            f"WHERE account_id = ? AND {key_col} IN (SELECT value FROM json_each(?))",
            (account_id, _ENCODE(keys).decode()),
        )
        found: dict[str, dict[str, Any]] = _loads(rows[0][0]) if rows and rows[0][0] else {}
        return found

    def put_entities(
        self,
        table: str,
        key_col: str,
        account_id: str,
        items: Sequence[tuple[str, dict[str, Any] | str]],
        generation: int | None = None,
        extra_col: str | None = None,
        extra: list[str] | None = None,
    ) -> bool:
        """Insert or replace entities (keeping their first ``seq``, i.e. their creation order).

        An item's data is the element, or its JSON text when the caller encoded it already (imports).
        Encoding happens before the store lock is taken, so API requests do not wait for it.
        """
        texts = [data if isinstance(data, str) else _ENCODE(data).decode() for _key, data in items]
        keys = [key for key, _data in items]
        # One statement over a JSON array of [key, JSON text(, extra)]: a single SQLite step for the batch
        # (see get_entities on why steps count), rows applied in array order.
        payload = _ENCODE(
            list(zip(keys, texts, extra, strict=True))
            if extra_col and extra is not None
            else list(zip(keys, texts, strict=True))
        ).decode()
        cols = f"account_id, {key_col}, data, seq" + (f", {extra_col}" if extra_col else "")
        values = "?1, value ->> 0, value ->> 1, ?2 + key" + (", value ->> 2" if extra_col else "")
        sql = (
            f"INSERT INTO {table}({cols}) SELECT {values} FROM json_each(?3) WHERE true "
            f"ON CONFLICT(account_id, {key_col}) DO UPDATE SET data = excluded.data"
        )
        with self.tx() as conn:
            if generation is not None and generation != self.generation:
                return False
            first = self._seq + 1
            self._seq += len(items)
            conn.execute(sql, (account_id, first, payload))
            return True

    def delete_entity(self, table: str, key_col: str, account_id: str, key: str) -> bool:
        with self.tx() as conn:
            cur = conn.execute(
                f"DELETE FROM {table} WHERE account_id = ? AND {key_col} = ?",
                (account_id, key),
            )
            if table == "contacts":
                conn.execute("DELETE FROM activities WHERE account_id = ? AND contact_email = ?", (account_id, key))
            return cur.rowcount > 0

    def list_entities(
        self, table: str, account_id: str | None, limit: int = -1, skip: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        where, params = ("WHERE account_id = ?", [account_id]) if account_id is not None else ("", [])
        total = int(self.query(f"SELECT COUNT(*) FROM {table} {where}", params)[0][0])
        rows = self.query(
            f"SELECT data FROM {table} {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*params, limit, skip],
        )
        return [_loads(r[0]) for r in rows], total

    def iter_entities(self, table: str, account_id: str) -> Iterator[dict[str, Any]]:
        """Every entity in creation order, paged (for exports)."""
        last = -1
        while True:
            rows = self.query(
                f"SELECT seq, data FROM {table} WHERE account_id = ? AND seq > ? ORDER BY seq LIMIT 2000",
                (account_id, last),
            )
            if not rows:
                return
            for row in rows:
                yield _loads(row[1])
            last = int(rows[-1][0])

    _AGGREGATE_SQL = (
        "SELECT contact_email, COUNT(*), COALESCE(SUM(json_extract(data, '$.totalPrice')), 0), "
        "MIN(json_extract(data, '$.purchaseDate')), MAX(json_extract(data, '$.purchaseDate')) "
        "FROM purchases WHERE account_id = ?"
    )

    @staticmethod
    def _aggregate(count: int, amount: float, first: str | None, last: str | None) -> dict[str, Any]:
        amount = round(float(amount), 2)
        return {
            "_totalPurchases": int(count),
            "_totalPurchasesAmount": amount,
            "_averagePurchasesAmount": round(amount / count, 2) if count else 0,
            "_firstPurchaseDate": first,
            "_lastPurchaseDate": last,
        }

    def purchase_aggregates(self, account_id: str, email: str) -> dict[str, Any]:
        """The contact's purchase statistics, computed from its purchases (which outlive the contact)."""
        rows = self.query(self._AGGREGATE_SQL + " AND contact_email = ?", (account_id, email))
        return self._aggregate(*rows[0][1:])

    def all_purchase_aggregates(self, account_id: str) -> dict[str, dict[str, Any]]:
        """Statistics of every contact with purchases, in one query (exports, read-back)."""
        rows = self.query(self._AGGREGATE_SQL + " GROUP BY contact_email", (account_id,))
        return {row[0]: self._aggregate(*row[1:]) for row in rows}

    def no_purchases(self) -> dict[str, Any]:
        return self._aggregate(0, 0, None, None)

    # --- activities -------------------------------------------------------------------------------------------
    def add_activity(self, account_id: str, email: str, kind: str, date: str, data: dict[str, Any]) -> dict[str, Any]:
        activity = {"id": new_id(), "type": kind, "contactEmail": email, "date": date, **data}
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO activities(id, account_id, contact_email, type, date, data) VALUES (?, ?, ?, ?, ?, ?)",
                (activity["id"], account_id, email, kind, date, _dumps(activity)),
            )
        return activity

    def activities(self, account_id: str, date_from: str | None = None, date_to: str | None = None) -> list[Any]:
        sql = "SELECT data FROM activities WHERE account_id = ?"
        params: list[Any] = [account_id]
        if date_from is not None and date_to is not None:
            sql += " AND date >= ? AND date < ?"
            params += [date_from, date_to]
        return [_loads(r[0]) for r in self.query(sql + " ORDER BY date, seq", params)]

    def delete_activities_of_purchase(self, account_id: str, purchase_id: str) -> None:
        with self.tx() as conn:
            conn.execute(
                "DELETE FROM activities WHERE account_id = ? AND type = 'purchase' "
                "AND json_extract(data, '$.purchaseId') = ?",
                (account_id, purchase_id),
            )

    # --- coupon sets, codes, workflows -------------------------------------------------------------------
    def _put_document(self, table: str, account_id: str, data: dict[str, Any]) -> None:
        """Upsert a JSON document keyed by ``data["id"]`` (coupon sets, workflows)."""
        with self.tx() as conn:
            conn.execute(
                f"INSERT INTO {table}(id, account_id, data) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET data = excluded.data",
                (data["id"], account_id, _dumps(data)),
            )

    def put_coupon_set(self, account_id: str, data: dict[str, Any]) -> None:
        self._put_document("coupon_sets", account_id, data)

    def get_coupon_set_raw(self, set_id: str, account_id: str | None = None) -> dict[str, Any] | None:
        return self.get_job("coupon_sets", set_id, account_id)

    def list_coupon_sets_raw(self, account_id: str | None, limit: int = -1, skip: int = 0) -> tuple[list[Any], int]:
        return self.list_jobs("coupon_sets", account_id, limit, skip)

    def existing_codes(self, set_id: str, codes: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(codes), 500):
            part = codes[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.query(
                f"SELECT code FROM coupon_codes WHERE set_id = ? AND code IN ({marks})",
                (set_id, *part),
            )
            found.update(r[0] for r in rows)
        return found

    def add_codes(self, set_id: str, codes: list[str], generation: int | None = None) -> bool:
        with self.tx() as conn:
            if generation is not None and generation != self.generation:
                return False
            now = time.time()
            conn.executemany(
                "INSERT OR IGNORE INTO coupon_codes(set_id, code, added_at) VALUES (?, ?, ?)",
                [(set_id, code, now) for code in codes],
            )
            return True

    def assign_codes(self, set_id: str, count: int) -> list[str]:
        """Mark ``count`` available codes as assigned (what a workflow does when it sends coupons)."""
        with self.tx() as conn:
            rows = conn.execute(
                "SELECT code FROM coupon_codes WHERE set_id = ? AND assigned_at IS NULL ORDER BY added_at, rowid "
                "LIMIT ?",
                (set_id, count),
            ).fetchall()
            now = time.time()
            conn.executemany(
                "UPDATE coupon_codes SET assigned_at = ? WHERE set_id = ? AND code = ?",
                [(now, set_id, r[0]) for r in rows],
            )
            return [r[0] for r in rows]

    def code_counts(self, set_id: str, as_of: float) -> tuple[int, int]:
        """(quantity, assigned) as they were at ``as_of`` (epoch seconds)."""
        rows = self.query(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN assigned_at IS NOT NULL AND assigned_at <= ? THEN 1 END), 0) "
            "FROM coupon_codes WHERE set_id = ? AND added_at <= ?",
            (as_of, set_id, as_of),
        )
        return int(rows[0][0]), int(rows[0][1])

    def list_codes(self, set_id: str) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT code, assigned_at IS NOT NULL FROM coupon_codes WHERE set_id = ? ORDER BY added_at, rowid",
            (set_id,),
        )
        return [{"code": r[0], "assigned": bool(r[1])} for r in rows]

    def put_workflow(self, account_id: str, data: dict[str, Any]) -> None:
        self._put_document("workflows", account_id, data)

    def get_workflow(self, workflow_id: str, account_id: str | None = None) -> dict[str, Any] | None:
        return self.get_job("workflows", workflow_id, account_id)

    def list_workflows(self, account_id: str | None) -> list[dict[str, Any]]:
        sql, params = "SELECT data FROM workflows", []
        if account_id is not None:
            sql += " WHERE account_id = ?"
            params.append(account_id)
        return [_loads(r[0]) for r in self.query(sql + " ORDER BY id", params)]
