"""Change detection (:mod:`connectif_sync.diff`): classification, suppression, known rows, deletions, and the
duplicate rule's register of confirmed keys (``IndexedSeen``: first occurrence kept, in every case)."""

from __future__ import annotations

import numpy as np

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
