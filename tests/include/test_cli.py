"""``connectif-sync`` commands that read the state store: ``rejected`` lists every row unless told otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectif_sync.cli import main
from connectif_sync.state import StateStore


def rows(n: int, prefix: str) -> list[dict[str, object]]:
    return [
        {"key": f"{prefix}{i}@example.com", "source_ref": f"id={i}", "field": "_email", "reason": "bad", "value": "x"}
        for i in range(n)
    ]


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    with StateStore(url) as store:
        older = store.begin_run("contacts", "full", None, "run-1")
        store.record_rejected("contacts", older, rows(5, "old"))
        store.finish_run(older, files=[], high_water=None, report={})
        latest = store.begin_run("contacts", "full", None, "run-2")
        store.record_rejected("contacts", latest, rows(200, "a"))
        store.record_rejected("contacts", latest, rows(61, "b"))  # a second batch of the same run
        store.finish_run(latest, files=[], high_water=None, report={})
    return url


def test_rejected_lists_every_row_of_the_latest_run(state_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rejected", "--object", "contacts", "--state", state_url]) == 0
    out, err = capsys.readouterr()
    listed = json.loads(out)
    assert len(listed) == 261  # it used to stop at 100 without a word
    assert listed[0]["key"] == "a0@example.com" and listed[-1]["key"] == "b60@example.com"
    assert {r["run_id"] for r in listed} == {"run-2"}
    assert err == ""


def test_rejected_with_limit_says_it_truncated(state_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rejected", "--object", "contacts", "--state", state_url, "--limit", "100"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)) == 100
    assert "showing 100 of 261 rejected rows" in err


def test_rejected_of_a_named_run_and_of_an_object_without_runs(
    state_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rejected", "--object", "contacts", "--state", state_url, "--run-id", "run-1"]) == 0
    assert [r["key"] for r in json.loads(capsys.readouterr().out)] == [f"old{i}@example.com" for i in range(5)]
    assert main(["rejected", "--object", "products", "--state", state_url]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_rejected_limit_must_be_positive(state_url: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["rejected", "--object", "contacts", "--state", state_url, "--limit", "0"])
    assert exc.value.code == 2


def test_the_readme_call_for_the_sqlite_extension_works() -> None:
    """README: ``from connectif_sync.extract import sqlite_hash_extension`` (``connectif_sync.extract`` itself is
    the ``extract`` function, so attribute access on it cannot work) and ``connectif_sync.sqlite_hash_extension``."""
    import connectif_sync

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "from connectif_sync.extract import sqlite_hash_extension" in readme
    assert "connectif_sync.extract.sqlite_hash_extension()" not in readme
    from connectif_sync.extract import sqlite_hash_extension

    found = sqlite_hash_extension()
    assert connectif_sync.sqlite_hash_extension() == found
    assert found is None or Path(found).is_file()
