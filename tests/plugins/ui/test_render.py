"""The run tab's ``extra`` and ``plan`` values read as small tables, escaped (they come from the data)."""

from __future__ import annotations

from connectif_provider.ui.data import mask_emails
from connectif_provider.ui.render import kv, structured


def test_a_dict_is_a_table_of_key_value_rows_with_nested_values_inline() -> None:
    guardrail = {
        "fired": ["deletes 12% > 5%", "changed 40% > 30%"],
        "held": True,
        "would_hold": False,
        "decision": {"approved": True, "by": "ops"},
    }
    html = structured(guardrail)
    assert html.startswith("<table class='kv nested'><tbody>") and html.endswith("</tbody></table>")
    assert "<tr data-key='fired'><td>fired</td><td class=n>deletes 12% &gt; 5%, changed 40% &gt; 30%</td></tr>" in html
    assert "<tr data-key='held'><td>held</td><td class=n>yes</td></tr>" in html
    assert "<tr data-key='would_hold'><td>would_hold</td><td class=n>no</td></tr>" in html
    assert "<td>decision</td><td class=n>approved: yes · by: ops</td>" in html  # one table level, then inline
    assert "{" not in html and "True" not in html  # no Python repr left


def test_scalars_lists_and_empty_values() -> None:
    assert structured(1234567) == "1,234,567"
    assert structured(None) == "—"
    assert structured("a & b") == "a &amp; b"
    assert structured([]) == structured({}) == "<span class=muted>none</span>"
    assert structured({"b", "a"}) == "a, b"  # a set in a stable order
    assert structured(["a, b", "c"]) == "a, b<br>c"  # items with commas of their own: one per line
    exports = [{"id": "e1", "rows": 1200}, {"id": "e2", "rows": 3}]
    assert structured(exports) == "id: e1 · rows: 1,200<br>id: e2 · rows: 3"
    assert structured({"tables": {"sales": 10, "contacts": 2000}}).count("<table") == 1


def test_values_and_keys_from_the_data_are_escaped() -> None:
    attack = "<script>alert(1)</script>"
    html = structured({attack: attack, "x' onmouseover='alert(1)": [attack, {"k": attack}]})
    assert "<script>" not in html and "onmouseover='" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 5  # key (attribute, cell), value, two items
    assert "data-key='x&#x27; onmouseover=&#x27;alert(1)'" in html
    row = kv([("guardrail", structured({"fired": [attack]}))], tid="extra")
    assert "<script>" not in row and row.startswith("<table class='kv' id='extra'>")


def test_emails_are_masked_everywhere_in_the_value() -> None:
    html = structured({"decision": {"by": "jane.doe@example.com"}, "keys": ["john@example.com"]}, mask_emails)
    assert "jane.doe@" not in html and "john@" not in html
    assert "j***@example.com" in html
