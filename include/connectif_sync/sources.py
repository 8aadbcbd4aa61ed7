"""One SQLAlchemy engine per source database URL, for the source's own queries: its columns, its key range,
its server's version, reads through SQLAlchemy; and the kinds of value its columns hold.

Why a module of its own: the mappings check a source's columns and extraction reads its key range; both need
the engine, and extraction imports the mappings, so the engine cannot live in either without an import circle.
"""

from __future__ import annotations

import enum
import functools
import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa


def source_engine(url: str | sa.URL) -> sa.Engine:
    """The process's engine for ``url``.

    One per URL: SQLAlchemy initialises an engine's dialect on its first connection (on MySQL/MariaDB a few
    queries, 0.02-0.03 s of each run's serial start when every query made an engine of its own). Its
    connections are not pooled (``NullPool``): none stays open between the queries or after a run."""
    return _engine(url if isinstance(url, str) else url.render_as_string(hide_password=False))


@functools.lru_cache(maxsize=16)
def _engine(url: str) -> sa.Engine:
    import sqlalchemy as sa  # here, not at import: the mappings import this module and need it for a check only

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    if engine.dialect.driver == "pymysql":
        sa.event.listen(engine, "do_connect", _pymysql_connect)
    return engine


def _pymysql_connect(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
    """A PyMySQL connection whose "preferred" TLS context (no TLS option in the URL) costs nothing to make.

    With no TLS option PyMySQL tries TLS when the server offers it, and verifies neither certificate nor
    host name (``CERT_NONE``); yet every connection first loads the system's CA bundle into a context made for
    it (``ssl.create_default_context``): 20-35 ms of each connection, 1 ms without (a MySQL watermark run is
    0.13-0.15 s, a full scan opens two). The same context without the certificates nobody checks is made once
    per process (:func:`_unverified_tls`); what is negotiated, and the fall-back to plain TCP where the server
    has no TLS, stay PyMySQL's. URLs with TLS options (``ssl_ca``, ``ssl_verify_cert``...) are untouched."""
    return _preferred_tls_connection_class()(*cargs, **cparams)


@functools.cache
def _preferred_tls_connection_class() -> type:
    import pymysql.connections

    class PreferredTLSConnection(pymysql.connections.Connection):
        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if isinstance(sslp, dict) and not sslp:  # PyMySQL's "preferred" mode asks for a context of no options
                return _unverified_tls()
            return super()._create_ssl_ctx(sslp)

    return PreferredTLSConnection


@functools.cache
def _unverified_tls() -> ssl.SSLContext:
    """What PyMySQL's preferred mode makes (``create_default_context`` then ``CERT_NONE``, no host-name
    check), without loading the CA bundle that ``CERT_NONE`` never reads."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def quoted_table(table: str, dialect: sa.Dialect) -> str:
    """A mapping's table name (``schema.table`` or ``table``, validated by the mapping) quoted for ``dialect``."""
    q = dialect.identifier_preparer.quote
    return ".".join(q(p) for p in table.split("."))


class ValueKind(enum.StrEnum):
    """What a source column holds, as far as the source hash is concerned (:func:`value_kind`)."""

    INTEGER = "integer"
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMP = "timestamp"  # without time zone
    TIMESTAMPTZ = "timestamptz"
    TEXT = "text"  # VARCHAR or TEXT: the value is its text
    OTHER = "other"  # hashed as its text: NUMERIC (1.0 and 1.00 are equal values, not equal CSV), floats, CHAR...


_TEXT_TYPES = frozenset({"VARCHAR", "TEXT", "STRING", "UNICODE", "UNICODETEXT", "NVARCHAR"})


def value_kind(type_: sa.types.TypeEngine[object]) -> ValueKind:
    """The kind of a reflected column type. Only kinds whose equal values always give the same CSV are told
    apart; anything else is :attr:`ValueKind.OTHER`, which the source hash takes as text (a NUMERIC's ``1.0``
    and ``1.00`` are equal, a float's ``0`` and ``-0`` too, an interval's ``1 day`` and ``24 hours``, a CITEXT's
    ``A`` and ``a``; a CHAR's value has its padding, its text not)."""
    import sqlalchemy as sa

    if isinstance(type_, sa.Boolean):
        return ValueKind.BOOLEAN
    if isinstance(type_, sa.Integer):
        return ValueKind.INTEGER
    if isinstance(type_, sa.DateTime):
        return ValueKind.TIMESTAMPTZ if getattr(type_, "timezone", False) else ValueKind.TIMESTAMP
    if isinstance(type_, sa.Date):
        return ValueKind.DATE
    if type(type_).__name__.upper() in _TEXT_TYPES:
        return ValueKind.TEXT
    return ValueKind.OTHER
