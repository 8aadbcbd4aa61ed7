"""Mappings: the shipped ones load; broken ones fail naming file, entry and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from connectif_sync.mappings import OBJECTS, MappingError, load_mapping, resolve_mapping


@pytest.mark.parametrize("obj", OBJECTS)
def test_shipped_mappings_load(obj: str) -> None:
    m = resolve_mapping(obj)
    assert m.object == obj
    assert m.key in m.fields


def test_contacts_mapping_content() -> None:
    m = resolve_mapping("contacts")
    assert m.table == "customers" and m.order_by == ("id",) and m.updated_at == "updated_at"
    assert m.output_columns[:3] == ["_email", "_externalId", "_name"]
    assert m.fields["_newsletterSubscriptionStatus"].map == {"true": "subscribed", "false": "unsubscribed"}
    assert m.fields["_mobilePhone"].country_column == "country"
    assert "favourite_categories" in m.fields  # custom field by id


def _write(tmp_path: Path, doc: dict[str, object]) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


BASE: dict[str, object] = {
    "object": "contacts",
    "source": {"table": "customers"},
    "key": "_email",
    "fields": {"_email": {"column": "email", "type": "email"}},
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"fields": {"_email": {"column": "email", "type": "email"}, "_nmae": "first_name"}},
         "fields._nmae: unknown Connectif field '_nmae'. Fix: use one of"),
        ({"fields": {"_name": "first_name"}}, "fields._email: required field unmapped. Fix: map it"),
        ({"source": {"table": "customers; DROP TABLE x"}}, "source.table: unsafe identifier"),
        ({"fields": {"_email": {"column": "lower(email)", "type": "email"}}},
         "fields._email.column: unsafe identifier 'lower(email)'"),
        ({"key": "_name"}, "key: '_name' is not one of the mapped fields. Fix:"),
        ({"fields": {"_email": {"column": "email", "type": "emial"}}},
         "fields._email: unknown type 'emial'. Fix: use one of"),
        ({"fields": {"_email": {"column": "email", "type": "email"}, "_birthdate": {"column": "b", "type": "string"}}},
         "fields._birthdate: type 'string' cannot produce _birthdate. Fix: use type date"),
        ({"object": "orders"}, "object: 'orders'. Fix: use one of contacts, products, coupons, purchases"),
        ({"source": {}}, "source: needs exactly one of `table` or `sql`"),
        ({"source": {"sql": "missing.sql"}}, "missing.sql does not exist"),
        ({"colour": 1}, "colour: unknown entry"),
        ({"fields": {"_email": {"column": "email", "type": "email", "maxlen": 3}}}, "unknown option(s) maxlen"),
        ({"fields": {"_email": {"column": "email", "type": "email"},
                     "_newsletterSubscriptionStatus": {"column": "n", "type": "enum", "map": {True: "yes"}}}},
         "maps to yes, not allowed here. Fix: use only subscribed, unsubscribed, none"),
    ],
)  # fmt: skip
def test_invalid_mapping_messages(tmp_path: Path, change: dict[str, object], expected: str) -> None:
    path = _write(tmp_path, {**BASE, **change})
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, {**BASE, "key": "nope", "fields": {"_name": "a b", "_xx": "c"}})
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    assert len(info.value.problems) == 4  # unsafe column, unknown field, _email unmapped, bad key


def test_sql_source_must_be_one_select(tmp_path: Path) -> None:
    (tmp_path / "q.sql").write_text("-- comment\nSELECT 1 AS email;\nDELETE FROM customers;\n", encoding="utf-8")
    path = _write(tmp_path, {**BASE, "source": {"sql": "q.sql"}})
    with pytest.raises(MappingError, match="must hold one SELECT"):
        load_mapping(path)
    (tmp_path / "q.sql").write_text("-- comment\nSELECT email FROM customers;\n", encoding="utf-8")
    assert load_mapping(path).sql == "SELECT email FROM customers"


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="file not found"):
        load_mapping(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("object: [contacts\n", encoding="utf-8")
    with pytest.raises(MappingError, match="not valid YAML"):
        load_mapping(tmp_path / "bad.yaml")


def test_object_mismatch() -> None:
    with pytest.raises(MappingError, match="but 'products' was asked"):
        resolve_mapping("products", resolve_mapping("contacts"))


def test_purchases_and_coupons_specific_rules(tmp_path: Path) -> None:
    fields = {"purchaseId": "a", "contactEmail": {"column": "b", "type": "email"},
              "purchaseDate": {"column": "d", "type": "datetime"}}  # fmt: skip
    doc = {"object": "purchases", "source": {"table": "x"}, "fields": fields, "line_fields": {"productId": "s"}}
    with pytest.raises(MappingError) as info:
        load_mapping(_write(tmp_path, doc))
    msg = str(info.value)
    assert "line_fields.quantity: required field unmapped" in msg
    assert "date_column: missing" in msg and "order_by: purchases need it" in msg
    coupons = {"object": "coupons", "source": {"table": "pool"}, "fields": {"code": "code"}}
    with pytest.raises(MappingError, match="partition_by: coupons need the column holding the coupon set id"):
        load_mapping(_write(tmp_path, coupons))
