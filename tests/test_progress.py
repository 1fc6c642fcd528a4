"""Long silent calls get a progress line while they run, and none after."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from omniforge.progress import heartbeat

log = logging.getLogger("omniforge.test_progress")


def test_a_long_call_logs_that_it_is_still_running(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="omniforge"), heartbeat(log, "exporting", 0.02):
        time.sleep(0.15)
    beats = [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]
    assert beats and beats[0].startswith("exporting: still running")
    count = len(beats)
    time.sleep(0.06)
    assert len([r for r in caplog.records if "still running" in r.getMessage()]) == count
    assert not [t for t in threading.enumerate() if t.name == "heartbeat: exporting"]


def test_an_error_in_the_block_stops_the_heartbeat() -> None:
    with pytest.raises(RuntimeError), heartbeat(log, "failing", 0.01):
        raise RuntimeError("export failed")
    assert not [t for t in threading.enumerate() if t.name == "heartbeat: failing"]
