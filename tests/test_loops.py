"""BackgroundLoop: works, sleeps, wakes on notify, survives a failing pass, stops cleanly."""

from __future__ import annotations

import threading
import time

import pytest

from appliance.loops import BackgroundLoop
from tests.conftest import wait_for


def test_a_pass_runs_at_start_and_again_when_notified() -> None:
    passes: list[float] = []
    loop = BackgroundLoop("t-notify", lambda: passes.append(time.monotonic()), 60.0, "failed")
    loop.start()
    try:
        wait_for(lambda: len(passes) == 1)
        loop.notify(123)  # what the caller says of the work is not needed
        wait_for(lambda: len(passes) == 2)
        assert loop.running()
    finally:
        loop.stop()
    assert not loop.running() and loop.stopping


def test_a_failing_pass_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")

    loop = BackgroundLoop("t-fail", step, 0.01, "the pass failed")
    loop.start()
    try:
        wait_for(lambda: len(calls) >= 2)
    finally:
        loop.stop()
    assert "the pass failed" in caplog.text


def test_until_idle_goes_again_at_once_while_there_is_work() -> None:
    work = [3]

    def step() -> int:
        if work[0]:
            work[0] -= 1
            return 1
        return 0

    loop = BackgroundLoop("t-idle", step, 60.0, "failed", until_idle=True)
    loop.start()
    try:
        wait_for(lambda: work[0] == 0)  # three passes without a 60 s sleep between them
    finally:
        loop.stop()


def test_delay_first_sleeps_before_the_first_pass_and_stop_ends_the_sleep() -> None:
    ran = threading.Event()
    loop = BackgroundLoop("t-delay", ran.set, 60.0, "failed", delay_first=True)
    loop.start()
    loop.stop()  # wakes the first sleep: the thread ends without a pass
    assert not ran.is_set() and not loop.running()
