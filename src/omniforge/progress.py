"""Progress lines for long calls that report nothing themselves (the exporter, onnxsim)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# Often enough that a silent minute never happens; rare enough not to flood a log.
HEARTBEAT_S = 30.0


@contextmanager
def heartbeat(log: logging.Logger, what: str, every: float = HEARTBEAT_S) -> Iterator[None]:
    """Log ``<what>: still running (<n> s)`` every ``every`` seconds until the block ends."""
    done = threading.Event()
    started = time.perf_counter()

    def beat() -> None:
        while not done.wait(every):
            log.info("%s: still running (%.0f s)", what, time.perf_counter() - started)

    thread = threading.Thread(target=beat, name=f"heartbeat: {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
