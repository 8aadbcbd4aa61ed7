"""The sample ERP's tables (SQLAlchemy Core), created and indexed for a bulk load.

See :mod:`sample_erp` for what each table holds.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_code", sa.String(20), nullable=False),
    sa.Column("email", sa.String(400)),
    sa.Column("first_name", sa.String(1000)),
    sa.Column("last_name", sa.String(1000)),
    sa.Column("birthdate", sa.Date),
    sa.Column("mobile_phone", sa.String(40)),
    sa.Column("country", sa.String(2)),
    sa.Column("loyalty_points", sa.String(12)),
    sa.Column("newsletter_consent", sa.Boolean),
    sa.Column("sms_consent", sa.Boolean),
    sa.Column("favourite_categories", sa.String(200)),
    sa.Column("customer_tier", sa.String(20)),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
)

categories = sa.Table(
    "categories",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("categories.id")),
    sa.Column("name", sa.String(100), nullable=False),
)

products = sa.Table(
    "products",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sku", sa.String(32), nullable=False),
    sa.Column("name", sa.String(1000)),
    sa.Column("description", sa.Text),
    sa.Column("url", sa.String(500)),
    sa.Column("image_url", sa.String(500)),
    sa.Column("price", sa.Numeric(12, 2)),
    sa.Column("price_without_vat", sa.Numeric(12, 2)),
    sa.Column("original_price", sa.Numeric(12, 2)),
    sa.Column("discount_percent", sa.Numeric(5, 2)),
    sa.Column("stock", sa.String(12)),
    sa.Column("category_id", sa.Integer, sa.ForeignKey("categories.id")),
    sa.Column("brand", sa.String(100)),
    sa.Column("tags", sa.String(200)),
    sa.Column("rating", sa.Numeric(3, 1)),
    sa.Column("published_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("order_number", sa.String(20), nullable=False),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("ordered_at", sa.DateTime, nullable=False, index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("payment_method", sa.String(20)),
    sa.Column("cart_id", sa.String(40)),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

order_lines = sa.Table(
    "order_lines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False, index=True),
    sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price", sa.Numeric(12, 2), nullable=False),
)

coupon_pool = sa.Table(
    "coupon_pool",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("coupon_set_id", sa.String(24), nullable=False),
    sa.Column("code", sa.String(100)),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("used_at", sa.DateTime),
    sa.Index("ix_coupon_pool_set_status", "coupon_set_id", "status"),
)

erasure_requests = sa.Table(
    "erasure_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("email", sa.String(400), nullable=False),
    sa.Column("requested_at", sa.DateTime, nullable=False),
    sa.Column("done_at", sa.DateTime),
    sa.Column("note", sa.String(200)),
)

TABLES: tuple[sa.Table, ...] = (
    customers,
    categories,
    products,
    orders,
    order_lines,
    coupon_pool,
    erasure_requests,
)


def create_schema(engine: sa.Engine, replace: bool = True, indexes: bool = True) -> None:
    """Create the sample ERP tables (dropping them first when ``replace``); ``indexes=False`` defers the
    secondary indexes (see :func:`create_indexes`), which makes a bulk load several times faster."""
    if replace:
        metadata.drop_all(engine)
    metadata.create_all(engine)
    if not indexes:
        mysql = engine.dialect.name in ("mysql", "mariadb")
        for table in TABLES:
            for index in table.indexes:
                if mysql and any(c.foreign_keys for c in index.columns):
                    continue  # MySQL needs an index on a foreign key column and refuses to drop it
                index.drop(engine)


def create_indexes(engine: sa.Engine) -> None:
    """Create the secondary indexes that :func:`create_schema` deferred."""
    for table in TABLES:
        for index in table.indexes:
            index.create(engine, checkfirst=True)
