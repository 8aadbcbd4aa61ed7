"""The background workers: attached by the app, and a state without them refuses to queue work silently."""

from __future__ import annotations

import pytest

from emulator.app import create_app
from emulator.state import create_state, generate_key
from emulator.workers import Workers


def test_a_state_outside_an_app_refuses_to_queue_jobs() -> None:
    state = create_state(api_key=generate_key())
    try:
        with pytest.raises(RuntimeError, match=r"create_app\(state\)"):
            state.workers.kick("imports", "default")
    finally:
        state.close()  # stopping no workers is fine


def test_the_app_attaches_the_workers() -> None:
    state = create_state(api_key=generate_key())
    try:
        create_app(state)
        assert isinstance(state.workers, Workers) and state.workers.state is state
    finally:
        state.close()
