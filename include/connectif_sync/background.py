"""Writes done by a thread of their own, in the order given, while the run's main thread goes on.

The main thread validates, hashes and writes every chunk, and each chunk waits for it: writing the CSV files
and their manifests (pyarrow releases the GIL while it writes) and storing the rejected rows (SQLite does while
it inserts) took about 0.25 CPU s of that thread per million-row first run (bench/README.md, session 18).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class Serial:
    """A thread that runs the calls given to :meth:`submit` one after another, in the order given.

    At most ``ahead`` calls wait for it; then :meth:`submit` waits, so that memory stays bounded when the
    writes are slower than the run. The first call that fails stops the rest (they are dropped) and its error
    is raised by the next :meth:`submit` or by :meth:`close`, in the caller's thread. The thread starts with the
    first call; ``inline`` runs every call in the caller's thread instead (e.g. an in-memory SQLite store, which
    another thread cannot see)."""

    def __init__(self, name: str, *, ahead: int, inline: bool = False) -> None:
        self.name, self.inline = name, inline
        self._queue: queue.Queue[Callable[[], object] | None] = queue.Queue(maxsize=ahead)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None  # the failed call's, until raised
        self._failed = False

    def submit(self, call: Callable[[], object]) -> None:
        self._raise()
        if self._failed:
            return  # an earlier call failed and was raised: the rest is dropped
        if self.inline:
            try:
                call()
            except BaseException:
                self._failed = True
                raise
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            self._thread.start()
        self._queue.put(call)

    def close(self, *, raise_error: bool = True) -> None:
        """Wait until every call given has run and the thread ended, then raise the first call's error (unless
        ``raise_error`` is false: a run that failed otherwise, whose own error is the one to see)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if raise_error:
            self._raise()
        else:
            self._error = None

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _work(self) -> None:
        while (call := self._queue.get()) is not None:
            if not self._failed:
                try:
                    call()
                except BaseException as exc:  # raised in the caller's thread
                    self._error, self._failed = exc, True
