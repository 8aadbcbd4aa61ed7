"""Declarative mappings: which source rows feed which Connectif fields, with which type and transform.

A mapping is a YAML file a user edits without touching Python (the sample ERP's live in
``connectif_sync/mappings/``). Loading validates it completely and raises one :class:`MappingError` that
lists every problem as ``<file>: <entry>: <problem>. Fix: <what to do>``.

Format::

    object: contacts                 # contacts | products | coupons | purchases
    source:
      table: customers               # a table (optionally schema.table) ...
      # sql: contacts.sql            # ... or a SELECT in a file next to this one; a variant for one
                                     # database, contacts.mysql.sql (postgresql, sqlite...), wins there
    key: _email                      # the Connectif field that identifies a row
    order_by: [id]                   # extraction order; the FIRST row of a duplicate key wins
    updated_at: updated_at           # optional: column for incremental (watermark) runs
    fields:
      _email: {column: email, type: email, required: true}
      _points: {column: loyalty_points, type: integer, min: 0}

Field options: ``column`` (source column, default: the field name), ``type`` (see :data:`TYPES`),
``required``, ``max_length``, ``min``/``max`` (numbers), ``separator`` (``list``: how the source
separates items), ``map`` (``enum``/``boolean``: source value -> Connectif value), ``values`` (``enum``:
allowed output values), ``default_country`` / ``country_column`` (``phone``), ``on_invalid``
(``reject`` the row, the default, or ``empty`` to send the field empty and keep the row).

Purchases add ``date_column`` (the order date that selects a time window), and ``line_fields`` (the
per-product fields of the payload); coupons add ``partition_by`` (the column holding the coupon set id:
one file series per set).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from connectif_sync.sources import ValueKind, quoted_table, source_engine, value_kind
from connectif_sync.thresholds import Thresholds

MAPPINGS_DIR = Path(__file__).with_name("mappings")
OBJECTS = ("contacts", "products", "coupons", "purchases")

TYPES = ("string", "email", "phone", "date", "datetime", "integer", "decimal", "boolean", "list", "category_path",
         "url", "enum")  # fmt: skip

_ANY = frozenset(TYPES)
_TEXT = frozenset({"string", "enum", "url", "email"})

# Connectif's fields per object (contract section 5 and 9) with the types that can produce them.
CONTACT_FIELDS: dict[str, frozenset[str]] = {
    "_email": frozenset({"email"}),
    "_name": frozenset({"string"}),
    "_surname": frozenset({"string"}),
    "_birthdate": frozenset({"date"}),
    "_mobilePhone": frozenset({"phone"}),
    "_points": frozenset({"integer"}),
    "_newsletterSubscriptionStatus": frozenset({"enum"}),
    "_smsSubscriptionStatus": frozenset({"enum"}),
    "_externalId": frozenset({"string"}),
}
SUBSCRIPTION_VALUES = ("subscribed", "unsubscribed", "none")

PRODUCT_FIELDS: dict[str, frozenset[str]] = {
    "productId": frozenset({"string"}),
    "name": frozenset({"string"}),
    "productDetailUrl": frozenset({"url"}),
    "unitPrice": frozenset({"decimal"}),
    "imageUrl": frozenset({"url"}),
    "thumbnailUrl": frozenset({"url"}),
    "description": frozenset({"string"}),
    "brand": frozenset({"string"}),
    "categories": frozenset({"category_path"}),
    "tags": frozenset({"list"}),
    "unitPriceOriginal": frozenset({"decimal"}),
    "unitPriceWithoutVAT": frozenset({"decimal"}),
    "discountedAmount": frozenset({"decimal"}),
    "discountedPercentage": frozenset({"decimal"}),
    "availability": frozenset({"enum"}),
    "inStockUnits": frozenset({"integer"}),
    "rating": frozenset({"decimal"}),
    "ratingCount": frozenset({"integer"}),
    "reviewCount": frozenset({"integer"}),
    "priority": frozenset({"integer"}),
    "publishedAt": frozenset({"datetime", "date"}),
    "isBlacklisted": frozenset({"boolean"}),
    "relatedExternalProductIds": frozenset({"list"}),
    "customField1": _ANY,
    "customField2": _ANY,
    "customField3": _ANY,
}
COUPON_FIELDS: dict[str, frozenset[str]] = {"code": frozenset({"string"})}
PURCHASE_FIELDS: dict[str, frozenset[str]] = {
    "purchaseId": frozenset({"string"}),
    "contactEmail": frozenset({"email"}),
    "cartId": frozenset({"string"}),
    "paymentMethod": frozenset({"string", "enum"}),
    "purchaseDate": frozenset({"datetime"}),
    "totalPrice": frozenset({"decimal"}),
    "totalQuantity": frozenset({"integer"}),
}
PURCHASE_LINE_FIELDS: dict[str, frozenset[str]] = {
    **{k: v for k, v in PRODUCT_FIELDS.items()},
    "quantity": frozenset({"integer"}),
    "price": frozenset({"decimal"}),
}

CATALOG: dict[str, dict[str, frozenset[str]]] = {
    "contacts": CONTACT_FIELDS,
    "products": PRODUCT_FIELDS,
    "coupons": COUPON_FIELDS,
    "purchases": PURCHASE_FIELDS,
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "contacts": ("_email",),
    "products": ("productId", "name", "productDetailUrl", "unitPrice"),
    "coupons": ("code",),
    "purchases": ("purchaseId", "contactEmail", "purchaseDate"),
}
REQUIRED_LINE = ("productId", "name", "productDetailUrl", "unitPrice", "quantity", "price")
DEFAULT_KEY = {"contacts": "_email", "products": "productId", "coupons": "code", "purchases": "purchaseId"}

# Plain SQL identifiers only: mappings are user-edited, and identifiers end up inside SQL text.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
CUSTOM_FIELD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,99}$")
_FIELD_OPTIONS = frozenset({"column", "type", "required", "max_length", "min", "max", "separator", "map", "values",
                            "default_country", "country_column", "on_invalid"})  # fmt: skip
_TOP_KEYS = frozenset({"object", "source", "key", "order_by", "updated_at", "fields", "line_fields", "date_column",
                       "partition_by", "description", "guardrail"})  # fmt: skip


class MappingError(ValueError):
    """A mapping file is not usable; the message lists every problem with its fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid mapping:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class FieldSpec:
    """How one Connectif field is produced from one source column."""

    name: str
    column: str
    type: str
    required: bool = False
    max_length: int | None = None
    min: float | None = None
    max: float | None = None
    separator: str | None = None
    map: dict[str, str] | None = None
    values: tuple[str, ...] | None = None
    default_country: str | None = None
    country_column: str | None = None
    on_invalid: str = "reject"


@dataclass(frozen=True)
class Mapping:
    """A validated mapping (see the module docstring for the YAML format)."""

    object: str
    path: Path
    key: str
    fields: dict[str, FieldSpec]
    table: str | None = None
    sql: str | None = None
    order_by: tuple[str, ...] = ()
    updated_at: str | None = None
    date_column: str | None = None
    partition_by: str | None = None
    line_fields: dict[str, FieldSpec] = field(default_factory=dict)
    #: The object's guardrail thresholds (``connectif_sync.guardrail.Thresholds`` names), as written.
    guardrail: dict[str, Any] = field(default_factory=dict)
    sql_variants: dict[str, str] = field(default_factory=dict)  # dialect name -> its own SELECT (see sql_for)
    #: The kind of value of each source column (lower-case name), as the database reported it: set by
    #: :func:`check_source_columns`; PostgreSQL's source hash hashes a known kind by its value, not its text.
    source_kinds: dict[str, ValueKind] = field(default_factory=dict)
    #: PostgreSQL's ``server_encoding`` of the source (set by :func:`check_source_columns`): text stored as UTF-8
    #: is what the driver hands over, byte for byte, so its source hash can be computed client-side.
    source_encoding: str | None = None
    #: The source table's primary-key columns (set by :func:`check_source_columns` on PostgreSQL and MySQL;
    #: None where unknown): :func:`~connectif_sync.extract.integer_ranges` cuts ranges of a single-column one.
    source_key: tuple[str, ...] | None = None
    #: The OID of a PostgreSQL source table whose row versions (``xmin``, ``ctid``) the sync may read as its
    #: rows' source hashes (set by :func:`check_source_columns`: a plain table without children, whose system
    #: columns the user may read; None elsewhere): see :mod:`connectif_sync.client_hash`.
    source_oid: int | None = None

    def sql_for(self, dialect: str) -> str | None:
        """The SELECT for a database (SQLAlchemy dialect name): its ``<name>.<dialect>.sql`` variant when the
        mapping's folder has one (SQL that differs between databases, e.g. string concatenation), else ``sql``."""
        return self.sql_variants.get(dialect, self.sql)

    @property
    def output_columns(self) -> list[str]:
        """The CSV header (Connectif field ids), in mapping order."""
        return list(self.fields)

    def source_columns(self) -> list[str]:
        """Every source column the mapping reads (fields, phone countries, key helpers), without repeats."""
        cols: list[str] = []
        specs = [*self.fields.values(), *self.line_fields.values()]
        for spec in specs:
            for c in (spec.column, spec.country_column):
                if c and c not in cols:
                    cols.append(c)
        for c in (*self.order_by, self.updated_at, self.date_column, self.partition_by):
            if c and c not in cols:
                cols.append(c)
        return cols


def _identifier(value: Any, where: str, problems: list[str], allow_dot: bool = False) -> str | None:
    if not isinstance(value, str):
        problems.append(f"{where}: expected a column or table name, got {value!r}. Fix: write a plain name")
        return None
    parts = value.split(".") if allow_dot else [value]
    if len(parts) > 2 or not all(IDENTIFIER.match(p) for p in parts):
        problems.append(
            f"{where}: unsafe identifier {value!r}. Fix: use a plain SQL name (letters, digits, _; "
            "for anything else, such as expressions or quoted names, write a SELECT in a `sql:` file)"
        )
        return None
    return value


def _field(
    name: str, raw: Any, where: str, catalog: dict[str, frozenset[str]], obj: str, problems: list[str]
) -> FieldSpec | None:
    if isinstance(raw, str):
        raw = {"column": raw}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(
            f"{where}: expected a mapping of options, got {raw!r}. Fix: write e.g. {{column: x, type: string}}"
        )
        return None
    unknown = set(raw) - _FIELD_OPTIONS
    if unknown:
        problems.append(
            f"{where}: unknown option(s) {', '.join(sorted(unknown))}. "
            f"Fix: use only {', '.join(sorted(_FIELD_OPTIONS))}"
        )
    ftype = _field_type(name, raw, where, catalog, obj, problems)
    if ftype is None:
        return None
    column = _identifier(raw.get("column", name), f"{where}.column", problems)
    country_column = raw.get("country_column")
    if country_column is not None:
        country_column = _identifier(country_column, f"{where}.country_column", problems)
    on_invalid = raw.get("on_invalid", "reject")
    if on_invalid not in ("reject", "empty"):
        problems.append(f"{where}.on_invalid: {on_invalid!r}. Fix: use reject (set the row aside) or empty")
    mapping, values = _map_and_values(name, raw, ftype, where, problems)
    for opt in ("max_length",):
        if raw.get(opt) is not None and (not isinstance(raw[opt], int) or raw[opt] < 1):
            problems.append(f"{where}.{opt}: {raw[opt]!r}. Fix: write a positive integer")
    for opt in ("min", "max"):
        if raw.get(opt) is not None and not isinstance(raw[opt], int | float):
            problems.append(f"{where}.{opt}: {raw[opt]!r}. Fix: write a number")
    if column is None:
        return None
    return FieldSpec(
        name=name,
        column=column,
        type=ftype,
        required=bool(raw.get("required", False)),
        max_length=raw.get("max_length"),
        min=raw.get("min"),
        max=raw.get("max"),
        separator=raw.get("separator"),
        map={_map_key(k): str(v) for k, v in mapping.items()} if mapping else None,
        values=tuple(str(v) for v in values) if values else None,
        default_country=raw.get("default_country"),
        country_column=country_column,
        on_invalid=on_invalid,
    )


def _field_type(
    name: str, raw: dict[str, Any], where: str, catalog: dict[str, frozenset[str]], obj: str, problems: list[str]
) -> str | None:
    """The field's ``type``: one the library knows and that can produce this Connectif field (else None)."""
    allowed = catalog.get(name)
    if allowed is None:
        if obj == "contacts" and not name.startswith("_") and CUSTOM_FIELD.match(name):
            allowed = _ANY  # a custom contact field, by its Connectif id
        else:
            known = ", ".join(sorted(catalog))
            extra = " or a custom field id (no leading _)" if obj == "contacts" else ""
            problems.append(f"{where}: unknown Connectif field {name!r}. Fix: use one of {known}{extra}")
            return None
    ftype = raw.get("type", "string" if "string" in allowed else sorted(allowed)[0])
    if ftype not in TYPES:
        problems.append(f"{where}: unknown type {ftype!r}. Fix: use one of {', '.join(TYPES)}")
        return None
    if ftype not in allowed:
        problems.append(f"{where}: type {ftype!r} cannot produce {name}. Fix: use type {' or '.join(sorted(allowed))}")
        return None
    return str(ftype)


def _map_and_values(
    name: str, raw: dict[str, Any], ftype: str, where: str, problems: list[str]
) -> tuple[dict[Any, Any] | None, list[Any] | None]:
    """``map`` (source value -> Connectif value) and ``values`` (the allowed Connectif values), checked
    against each other; the subscription and availability fields know their values."""
    mapping = raw.get("map")
    if mapping is not None and not isinstance(mapping, dict):
        problems.append(f"{where}.map: expected source: target pairs. Fix: write e.g. {{true: subscribed}}")
        mapping = None
    values = raw.get("values")
    if name in ("_newsletterSubscriptionStatus", "_smsSubscriptionStatus"):
        values = values or list(SUBSCRIPTION_VALUES)
    if name == "availability":
        values = values or ["instock", "outofstock"]
    if ftype == "enum" and not values and not mapping:
        problems.append(f"{where}: an enum needs `values` or `map`. Fix: list the allowed Connectif values")
    if values is not None and mapping:
        bad = sorted({str(v) for v in mapping.values()} - {str(v) for v in values})
        if bad:
            problems.append(
                f"{where}.map: maps to {', '.join(bad)}, not allowed here. Fix: use only {', '.join(values)}"
            )
    return mapping, values


def _map_key(k: Any) -> str:
    """YAML turns ``true``/``yes`` into booleans; match them against the text form of source values."""
    if isinstance(k, bool):
        return "true" if k else "false"
    return str(k)


def _fields(
    raw: Any, where: str, catalog: dict[str, frozenset[str]], obj: str, problems: list[str]
) -> dict[str, FieldSpec]:
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{where}: missing or empty. Fix: map at least the required fields")
        return {}
    out: dict[str, FieldSpec] = {}
    for name, spec in raw.items():
        f = _field(str(name), spec, f"{where}.{name}", catalog, obj, problems)
        if f is not None:
            out[f.name] = f
    return out


def load_mapping(path: str | Path) -> Mapping:
    """Read and validate a mapping file; raise :class:`MappingError` naming file, entry and fix."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError([f"{path}: file not found. Fix: check the path, or copy one from {MAPPINGS_DIR}"]) from None
    except yaml.YAMLError as exc:
        raise MappingError([f"{path}: not valid YAML ({exc}). Fix: correct the syntax at the position shown"]) from None
    return parse_mapping(raw, path)


def parse_mapping(raw: Any, path: Path) -> Mapping:
    """Validate already-parsed YAML (``path`` names the file in messages and anchors ``sql:`` files)."""
    p = str(path)
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise MappingError([f"{p}: expected a YAML mapping at the top. Fix: start with `object: contacts`"])
    for k in sorted(set(raw) - _TOP_KEYS):
        problems.append(f"{p}: {k}: unknown entry. Fix: use only {', '.join(sorted(_TOP_KEYS))}")
    obj = raw.get("object")
    if obj not in OBJECTS:
        raise MappingError([*problems, f"{p}: object: {obj!r}. Fix: use one of {', '.join(OBJECTS)}"])
    table, sql, sql_variants = _source(raw.get("source"), path, problems)
    catalog = CATALOG[obj]
    fields = _fields(raw.get("fields"), f"{p}: fields", catalog, obj, problems)
    line_fields: dict[str, FieldSpec] = {}
    if obj == "purchases":
        line_fields = _fields(raw.get("line_fields"), f"{p}: line_fields", PURCHASE_LINE_FIELDS, obj, problems)
        for name in REQUIRED_LINE:
            if raw.get("line_fields") and name not in (raw.get("line_fields") or {}):
                problems.append(f"{p}: line_fields.{name}: required field unmapped. Fix: map it to a source column")
    elif raw.get("line_fields"):
        problems.append(f"{p}: line_fields: only purchases have product lines. Fix: remove the entry")
    for name in REQUIRED[obj]:
        if raw.get("fields") and name not in fields and name not in (raw.get("fields") or {}):
            problems.append(f"{p}: fields.{name}: required field unmapped. Fix: map it to a source column")
    key = raw.get("key", DEFAULT_KEY[obj])
    if not isinstance(key, str) or key not in fields:
        problems.append(
            f"{p}: key: {key!r} is not one of the mapped fields. Fix: set key to the field that identifies a row "
            f"(usually {DEFAULT_KEY[obj]})"
        )
    order_by, updated_at, date_column, partition_by = _row_columns(raw, obj, p, problems)
    guardrail = raw.get("guardrail") or {}
    if guardrail:
        try:
            Thresholds().with_overrides(guardrail, f"{p}: guardrail")
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise MappingError(problems)
    return Mapping(
        object=obj,
        path=path,
        key=key,
        fields=fields,
        table=table,
        sql=sql,
        order_by=order_by,
        updated_at=updated_at,
        date_column=date_column,
        partition_by=partition_by,
        line_fields=line_fields,
        guardrail=dict(guardrail) if isinstance(guardrail, dict) else {},
        sql_variants=sql_variants,
    )


def _source(source: Any, path: Path, problems: list[str]) -> tuple[str | None, str | None, dict[str, str]]:
    """``source:``: a table, or a ``sql:`` file (with its ``<name>.<dialect>.sql`` variants beside it)."""
    p = str(path)
    table = sql = None
    sql_variants: dict[str, str] = {}
    if not isinstance(source, dict) or bool(source.get("table")) == bool(source.get("sql")):
        problems.append(f"{p}: source: needs exactly one of `table` or `sql`. Fix: write source: {{table: my_table}}")
    elif source.get("table"):
        table = _identifier(source["table"], f"{p}: source.table", problems, allow_dot=True)
    else:
        sql_path = (path.parent / str(source["sql"])).resolve()
        if not sql_path.is_file():
            problems.append(f"{p}: source.sql: {sql_path} does not exist. Fix: put the SELECT file next to the mapping")
        else:
            sql = _select(sql_path, p, problems)
            for variant in sorted(sql_path.parent.glob(f"{sql_path.stem}.*{sql_path.suffix}")):
                dialect = variant.name[len(sql_path.stem) + 1 : -len(sql_path.suffix) or None]
                if dialect and "." not in dialect:
                    sql_variants[dialect] = _select(variant, p, problems)
    return table, sql, sql_variants


def _row_columns(
    raw: dict[str, Any], obj: str, p: str, problems: list[str]
) -> tuple[tuple[str, ...], str | None, str | None, str | None]:
    """``order_by``, ``updated_at``, ``date_column`` and ``partition_by``, with what each object needs."""
    order_by_raw = raw.get("order_by", [])
    if isinstance(order_by_raw, str):
        order_by_raw = [order_by_raw]
    order_by = tuple(c for c in (_identifier(c, f"{p}: order_by", problems) for c in order_by_raw) if c)
    if obj == "purchases" and not order_by:
        problems.append(
            f"{p}: order_by: purchases need it so that an order's lines arrive together. "
            "Fix: order_by: [order_id, line_id]"
        )
    updated_at = raw.get("updated_at")
    if updated_at is not None:
        updated_at = _identifier(updated_at, f"{p}: updated_at", problems)
    date_column = raw.get("date_column")
    if obj == "purchases":
        if date_column is None:
            problems.append(f"{p}: date_column: missing. Fix: name the order date column that selects a time window")
        else:
            date_column = _identifier(date_column, f"{p}: date_column", problems)
    partition_by = raw.get("partition_by")
    if partition_by is not None:
        partition_by = _identifier(partition_by, f"{p}: partition_by", problems)
    if obj == "coupons" and partition_by is None:
        problems.append(
            f"{p}: partition_by: coupons need the column holding the coupon set id. Fix: partition_by: coupon_set_id"
        )
    return order_by, updated_at, date_column, partition_by


def check_source_columns(mapping: Mapping, source_url: str) -> Mapping:
    """Raise a :class:`MappingError` naming the mapping file, the entry and the fix for every column the
    mapping reads that its source does not have (instead of the database's "no such column" mid-run); else
    the mapping with the kinds of its source table's columns (:attr:`Mapping.source_kinds`), and on PostgreSQL
    and MySQL its encoding and primary key (:attr:`Mapping.source_encoding`, :attr:`Mapping.source_key`)."""
    import sqlalchemy as sa

    kinds: dict[str, ValueKind] = {}
    encoding: str | None = None
    key: tuple[str, ...] | None = None
    oid: int | None = None
    with source_engine(source_url).connect() as conn:
        dialect = conn.dialect.name
        if mapping.table:
            schema, _, name = mapping.table.rpartition(".")
            if dialect in ("mysql", "mariadb"):
                columns, key = _mysql_columns(conn, schema, name)
            elif dialect == "postgresql":
                columns, key, encoding, oid = _pg_columns(conn, mapping.table)
            else:
                inspector = sa.inspect(conn)
                found = inspector.has_table(name, schema=schema or None)
                reflected = inspector.get_columns(name, schema=schema or None) if found else []
                columns = [(c["name"], value_kind(c["type"])) for c in reflected]
            if not columns:
                raise MappingError(
                    [f"{mapping.path}: source.table: {mapping.table!r} is not a table of the source database. "
                     "Fix: write the name of an existing table (or view), or use source.sql"]
                )  # fmt: skip
            have = [c for c, _ in columns]
            kinds = {c.lower(): kind for c, kind in columns}
        elif mapping.sql:
            if dialect == "postgresql":
                encoding = str(conn.exec_driver_sql("SHOW server_encoding").scalar())
            sql = mapping.sql_for(dialect)
            query = sa.text(f"SELECT * FROM ({sql}) AS mapping_check WHERE 1 = 0")
            try:
                have = list(conn.execute(query).keys())
            except sa.exc.DBAPIError:  # e.g. SQL Server refuses ORDER BY in a subquery: the read will tell
                return mapping
        else:
            return mapping
    known = {c.lower() for c in have}
    problems: list[str] = []
    where: dict[str, str] = {}
    for name, spec in [*mapping.fields.items(), *mapping.line_fields.items()]:
        where.setdefault(spec.column, f"fields.{name}.column")
        if spec.country_column:
            where.setdefault(spec.country_column, f"fields.{name}.country_column")
    for attr in ("updated_at", "date_column", "partition_by"):
        value = getattr(mapping, attr)
        if value:
            where.setdefault(value, attr)
    for c in mapping.order_by:
        where.setdefault(c, "order_by")
    for column, entry in where.items():
        if column.lower() not in known:
            problems.append(
                f"{mapping.path}: {entry}: column {column!r} is not in the source "
                f"({mapping.table or 'source.sql'}: {', '.join(have)}). Fix: name one of these columns"
            )
    if problems:
        raise MappingError(problems)
    if not kinds:
        return mapping
    return replace(mapping, source_kinds=kinds, source_encoding=encoding, source_key=key, source_oid=oid)


_UTF8_CHARSETS = frozenset({"utf8mb4", "utf8mb3", "utf8", "ascii"})
_MYSQL_KINDS = {
    **dict.fromkeys(("tinyint", "smallint", "mediumint", "int", "integer", "bigint"), ValueKind.INTEGER),
    "date": ValueKind.DATE,
    **dict.fromkeys(("datetime", "timestamp"), ValueKind.TIMESTAMP),
    **dict.fromkeys(("varchar", "text"), ValueKind.TEXT),
}


def _mysql_columns(conn: Any, schema: str, table: str) -> tuple[list[tuple[str, ValueKind]], tuple[str, ...]]:
    """A MySQL/MariaDB table's columns and kinds, and its primary key's columns, from ``information_schema`` in
    two short queries (SQLAlchemy's reflection parses ``SHOW CREATE TABLE`` with regular expressions it compiles
    first: 20-30 ms of every run, 10 ms more for the key).
    The kinds are :func:`value_kind`'s for the same types, but for what the client receives otherwise than the
    server hashes it, :attr:`ValueKind.OTHER`: text in a character set that is not UTF-8 (MariaDB hashes its
    bytes in that set, the driver hands over UTF-8), ``BIGINT UNSIGNED`` (beyond int64) and ``ZEROFILL``
    integers (printed with their zeros). Only the client-side hash (:mod:`connectif_sync.client_hash`) reads
    MySQL's kinds."""
    import sqlalchemy as sa

    # Each query names its table by constants: MariaDB then reads that table's definition only, not every
    # table of the server (a join on information_schema would not say so to it).
    where = "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :table"
    params = {"schema": schema or None, "table": table}
    rows = conn.execute(
        sa.text(f"SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME FROM information_schema.COLUMNS "
                f"{where} ORDER BY ORDINAL_POSITION"), params,
    )  # fmt: skip
    columns: list[tuple[str, ValueKind]] = []
    for column, data_type, column_type, charset in rows:
        kind = _MYSQL_KINDS.get(str(data_type).lower(), ValueKind.OTHER)
        text_elsewhere = kind is ValueKind.TEXT and str(charset or "").lower() not in _UTF8_CHARSETS
        shape = str(column_type).lower()  # e.g. "bigint(20) unsigned zerofill"
        huge = shape.startswith("bigint") and "unsigned" in shape
        printed = kind is ValueKind.INTEGER and ("zerofill" in shape or huge)
        columns.append((str(column), ValueKind.OTHER if text_elsewhere or printed else kind))
    key = conn.execute(
        sa.text(f"SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE {where} "
                "AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION"), params,
    ).scalars()  # fmt: skip
    return columns, tuple(str(c) for c in key)


_PG_KINDS = {
    **dict.fromkeys(("smallint", "integer", "bigint"), ValueKind.INTEGER),
    "boolean": ValueKind.BOOLEAN,
    "date": ValueKind.DATE,
    **dict.fromkeys(("text", "character varying"), ValueKind.TEXT),
}


def _pg_kind(type_name: str) -> ValueKind:
    """The kind of a PostgreSQL type as ``format_type`` writes it (``timestamp(3) with time zone``,
    ``character varying(255)``...): :func:`value_kind` of the type SQLAlchemy reflects for it (a domain, by
    its name, is :attr:`ValueKind.OTHER`, as SQLAlchemy's ``DOMAIN`` is)."""
    base = re.sub(r"\(\d+(,\d+)?\)", "", type_name).strip()  # without its modifier
    if base == "timestamp without time zone":
        return ValueKind.TIMESTAMP
    if base == "timestamp with time zone":
        return ValueKind.TIMESTAMPTZ
    return _PG_KINDS.get(base, ValueKind.OTHER)


_PG_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), array_position(pk.indkey::int2[], a.attnum),
       current_setting('server_encoding'),
       CASE WHEN c.relkind <> 'r' OR c.relhassubclass THEN NULL
            WHEN (SELECT count(*) FROM pg_attribute s WHERE s.attrelid = c.oid AND s.attnum < 0
                  AND s.attname IN ('xmin', 'ctid')) < 2 THEN NULL  -- a server like PostgreSQL without them
            WHEN has_column_privilege(c.oid, 'xmin', 'SELECT') AND has_column_privilege(c.oid, 'ctid', 'SELECT')
            THEN c.oid::bigint END
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
LEFT JOIN pg_index pk ON pk.indrelid = a.attrelid AND pk.indisprimary
WHERE a.attrelid = to_regclass(:table) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def _pg_columns(conn: Any, table: str) -> tuple[list[tuple[str, ValueKind]], tuple[str, ...], str | None, int | None]:
    """A PostgreSQL table's (or view's) columns and kinds, its primary key's columns, the server's encoding
    and :attr:`Mapping.source_oid`, in one catalog query: SQLAlchemy's reflection took three (and a compilation
    of each on first use), 15-20 ms of every run's serial start (bench/README.md, session 13). The kinds are
    :func:`value_kind`'s of the types SQLAlchemy reflects (``tests/include/test_mappings_servers.py`` compares
    them type by type). Row versions serve a plain table only: a view has none, and the tables of a
    partitioned or inherited one share row positions."""
    import sqlalchemy as sa

    rows = conn.execute(sa.text(_PG_COLUMNS), {"table": quoted_table(table, conn.dialect)}).all()
    if not rows:  # no such table (check_source_columns says so)
        return [], (), None, None
    key = sorted((int(at), str(name)) for name, _, at, _, _ in rows if at is not None)
    oid = None if rows[0][4] is None else int(rows[0][4])
    columns = [(str(name), _pg_kind(str(t))) for name, t, _, _, _ in rows]
    return columns, tuple(c for _, c in key), str(rows[0][3]), oid


def _select(sql_path: Path, p: str, problems: list[str]) -> str:
    """The one SELECT of a ``sql:`` file, without comments and the final semicolon."""
    text = sql_path.read_text(encoding="utf-8")
    sql = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("--")).strip()
    sql = sql.rstrip(";").strip()
    if not re.match(r"^(with|select)\b", sql, re.IGNORECASE) or ";" in sql:
        problems.append(
            f"{p}: source.sql: {sql_path.name} must hold one SELECT (or WITH ... SELECT). Fix: remove other statements"
        )
    return sql


def default_mapping_path(obj: str) -> Path:
    """The shipped mapping of ``obj`` for the sample ERP."""
    if obj not in OBJECTS:
        raise MappingError([f"object {obj!r}: unknown. Fix: use one of {', '.join(OBJECTS)}"])
    return MAPPINGS_DIR / f"{obj}.yaml"


def resolve_mapping(obj: str, mapping: str | Path | Mapping | None = None) -> Mapping:
    """A mapping object from a path, an already-loaded mapping, or the shipped default for ``obj``."""
    if isinstance(mapping, Mapping):
        loaded = mapping
    else:
        loaded = load_mapping(mapping if mapping is not None else default_mapping_path(obj))
    if loaded.object != obj:
        raise MappingError(
            [f"{loaded.path}: object: {loaded.object!r}, but {obj!r} was asked. Fix: pass the {obj} mapping"]
        )
    return loaded
