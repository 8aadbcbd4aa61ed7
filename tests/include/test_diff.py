"""Change detection (:mod:`connectif_sync.diff`): classification, suppression, known rows, deletions, and the
duplicate rule's register of confirmed keys (``IndexedSeen``: first occurrence kept, in every case)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa

from connectif_sync.diff import IndexedSeen
from connectif_sync.state import StateIndex


def _index(n: int) -> StateIndex:
    keys = np.arange(n, dtype=np.int64) * 7 + 1
    return StateIndex(keys, keys * 3, np.zeros(n, bool), keys * 5)


def test_add_positions_marks_later_occurrences_only() -> None:
    seen = IndexedSeen(_index(10))
    assert seen.add_positions(np.array([3, 1, 4], np.int64)).tolist() == [False, False, False]
    # already seen (1, 4), repeated inside the batch (5 twice, 3 again), and fresh (0, 9)
    got = seen.add_positions(np.array([1, 5, 0, 5, 9, 4, 5], np.int64))
    assert got.tolist() == [True, False, False, True, False, True, True]
    assert seen.index is not None and seen.index.seen.tolist() == [True, True, False, True, True, True, False,
                                                                   False, False, True]  # fmt: skip
    assert seen.add_positions(np.array([2], np.int64)).tolist() == [False]
    assert seen.add_positions(np.array([2], np.int64)).tolist() == [True]
    assert seen.add_positions(np.array([], np.int64)).tolist() == []


def test_add_new_spans_confirmed_and_other_keys() -> None:
    index = _index(5)
    seen = IndexedSeen(index)
    confirmed = index.key_hashes[[2, 4]].view(np.uint64)
    others = np.array([1000, 1001], np.uint64)
    batch = np.concatenate([confirmed, others, confirmed[:1], others[:1]])
    assert seen.add_new(batch).tolist() == [False, False, False, False, True, True]
    assert seen.add_positions(np.array([2, 3], np.int64)).tolist() == [True, False]


def test_classify_sorts_rows_into_new_changed_unchanged_and_suppressed() -> None:
    from connectif_sync.diff import classify

    row_hashes = np.array([10, 20, 30, 40, 50], np.int64)
    found = np.array([False, True, True, True, False])
    confirmed = np.array([0, 20, 99, 40, 0], np.int64)  # row 1 unchanged, row 2 changed
    suppressed = np.array([False, False, False, True, True])  # rows 3 (unchanged) and 4 (new) are suppressed
    v = classify(row_hashes, found, confirmed, suppressed)
    assert v.new.tolist() == [True, False, False, False, False]
    assert v.changed.tolist() == [False, False, True, False, False]
    assert v.unchanged.tolist() == [False, True, False, False, False]
    assert v.to_send(full_resync=False).tolist() == [True, False, True, False, False]
    # a resync sends unchanged rows too, never suppressed ones
    assert v.to_send(full_resync=True).tolist() == [True, True, True, False, False]


def test_suppression_marks_keys_with_their_reasons() -> None:
    from connectif_sync.diff import Suppression

    s = Suppression({7: "erasure request id=1", -3: "erasure request id=2"})
    assert s.hashes.tolist() == [-3, 7]
    assert s.mask(np.array([1, 7, -3, 8], np.int64)).tolist() == [False, True, True, False]
    assert s.why(-3) == "erasure request id=2" and s.why(1) is None
    assert Suppression({}).mask(np.array([1, 2], np.int64)).tolist() == [False, False]


def test_known_rows_split_into_unchanged_duplicates_and_suppressed() -> None:
    from connectif_sync.diff import Suppression, split_known

    index = _index(6)
    seen = IndexedSeen(index)
    suppression = Suppression({int(index.key_hashes[4]): "erased"})
    known = split_known(np.array([0, 4, 2, 0, 5], np.int64), index, seen, suppression)
    assert known.duplicate.tolist() == [False, False, False, True, False]
    assert known.gone.tolist() == [False, True, False, False, False]
    assert known.unchanged == 3
    # a suppressed key that repeats is one duplicate, not a second suppressed row
    again = split_known(np.array([4], np.int64), index, seen, suppression)
    assert (again.duplicate.tolist(), again.gone.tolist(), again.unchanged) == ([True], [False], 0)


def test_deleted_keys_counts_unseen_confirmed_keys_in_a_full_scan_only(tmp_path: Path) -> None:
    from connectif_sync.diff import deleted_keys
    from connectif_sync.state import StateStore

    with StateStore(f"sqlite:///{tmp_path / 'none.db'}", readonly=True) as store:  # no store yet: no names
        index = _index(4)
        index.lookup(index.key_hashes[[0, 2]])  # the source still has keys 0 and 2
        assert deleted_keys(index, store, "contacts") == (2, [])
        assert deleted_keys(None, store, "contacts") == (0, [])  # incremental runs detect no deletions


def test_fingerprint_follows_the_mapping_and_source_hashes_the_values() -> None:
    from connectif_sync.diff import mapping_fingerprint, source_hashes
    from connectif_sync.mappings import resolve_mapping

    m = resolve_mapping("contacts", None)
    other = dataclasses.replace(m, fields={**m.fields, "_name": dataclasses.replace(m.fields["_name"], max_length=10)})
    assert mapping_fingerprint(m) == mapping_fingerprint(resolve_mapping("contacts", None))
    assert mapping_fingerprint(m) != mapping_fingerprint(other)
    columns = {c: pa.array(["x", "x", "x"]) for c in m.source_columns()}
    columns["email"] = pa.array(["a@x.com", "a@x.com", "b@x.com"])
    columns["updated_at"] = pa.array(["2025-01-01", "2025-06-01", "2025-01-01"])  # not part of the hash
    h = source_hashes(pa.table(columns), m, mapping_fingerprint(m))
    assert h[0] == h[1] and h[0] != h[2]
    assert source_hashes(pa.table(columns), m, mapping_fingerprint(other))[0] != h[0]


def test_change_set_keeps_hashes_masks_and_a_sample() -> None:
    from connectif_sync.diff import CHANGED_SAMPLE, ChangeSet, empty_masks

    table = pa.table({"a": ["1", "", None, "4"], "b": [None, None, None, None], "c": ["x", "y", "", "z"]})
    masks = empty_masks(table, ["a", "b", "c"])
    assert masks.tolist() == [0b010, 0b011, 0b111, 0b010]
    changes = ChangeSet(["a", "b", "c"])
    for start in range(0, 40, 4):  # ten chunks of four changed rows
        keys = pa.array([f"k{start + i}" for i in range(4)])
        changes.add(keys, np.arange(start, start + 4, dtype=np.int64), table, masks)
    assert len(changes) == 40
    changes.close()
    assert changes.key_hashes.tolist() == list(range(40)) and changes.empty_masks.tolist() == masks.tolist() * 10
    assert len(changes.sample) == CHANGED_SAMPLE
    assert changes.sample[0] == {"key": "k0", "key_hash": 0, "after": {"a": "1", "b": None, "c": "x"}}
