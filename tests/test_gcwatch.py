"""Garbage-collection pauses are logged (sftpsms.gcwatch)."""

from __future__ import annotations

import gc
import logging
import time

import pytest

from sftpsms import gcwatch


def test_a_slow_collection_is_logged_and_a_quick_one_is_not(caplog: pytest.LogCaptureFixture) -> None:
    watch = gcwatch.PauseWatch(slow=0.01)
    with caplog.at_level(logging.WARNING, logger="sftpsms.gcwatch"):
        watch("start", {"generation": 0})
        watch("stop", {"generation": 0, "collected": 1})
        watch("start", {"generation": 2})
        time.sleep(0.02)
        watch("stop", {"generation": 2, "collected": 7})
    assert [generation for generation, _ in watch.pauses] == [2]
    [record] = caplog.records
    assert "garbage collection (generation 2) paused the process" in record.getMessage()
    assert "7 objects collected" in record.getMessage()


def test_watch_registers_one_callback_that_sees_real_collections() -> None:
    before = list(gc.callbacks)
    gc.callbacks[:] = [c for c in before if not isinstance(c, gcwatch.PauseWatch)]
    try:
        watch = gcwatch.watch(slow=0.0)
        assert gcwatch.watch() is watch
        assert sum(isinstance(c, gcwatch.PauseWatch) for c in gc.callbacks) == 1
        gc.collect()
        assert watch.pauses and watch.pauses[-1][0] == 2
    finally:
        gc.callbacks[:] = before
