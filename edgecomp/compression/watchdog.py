"""A hang must never be silent: stop a training or evaluation loop that has stopped making progress.

The loop calls `beat(where)` after every batch. A daemon thread compares the time since the last beat
with what the loop has shown it needs: `factor` × the slowest of the recent batch times, but never less
than `floor_s` (and `first_s` before any batch has finished, which also covers warm-up). Past that
limit it prints one line naming the stage, the batch it was on and the likely cause, and ends the
process with exit code 1. The Python main thread cannot be interrupted inside a native kernel
(a deadlocked oneDNN convolution holds it forever), hence `os._exit`; checkpoints are written
atomically, so the last finished step stays on disk for `--resume`. Time the whole process spent stopped
(Ctrl-Z, SIGSTOP), which the thread sees as one long gap between its own wake-ups, is not a stall.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Optional

FACTOR = float(os.environ.get("EDGECOMP_WATCHDOG_FACTOR", 50))
FLOOR_S = float(os.environ.get("EDGECOMP_WATCHDOG_FLOOR_S", 120))
FIRST_S = float(os.environ.get("EDGECOMP_WATCHDOG_FIRST_S", 900))
STOPPED_S = 5.0  # a wake-up this much later than asked: the process was stopped, not the loop
LIKELY_CAUSE = (
    "likely a deadlock inside a native kernel (for example oneDNN's strided 1x1 convolution on "
    "channels-last input, see the README's known limits) or an exhausted machine"
)


def _exit_process(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
    os._exit(1)


class Watchdog:
    """Context manager around one loop; `beat` after each batch."""

    def __init__(self, label: str, *, factor: float = FACTOR, floor_s: float = FLOOR_S, first_s: float = FIRST_S,
                 on_hang: Callable[[str], None] = _exit_process, window: int = 20):
        self.label, self.factor, self.floor_s, self.first_s = label, factor, floor_s, first_s
        self.on_hang = on_hang
        self._recent: deque[float] = deque(maxlen=window)
        self._last = time.perf_counter()
        self._where = "before the first batch finished"
        self._stop = threading.Event()
        self._paused = False
        self._thread: Optional[threading.Thread] = None

    def limit_s(self) -> float:
        if not self._recent:
            return self.first_s
        return max(self.floor_s, self.factor * max(self._recent))

    def beat(self, where: str) -> None:
        now = time.perf_counter()
        self._recent.append(now - self._last)
        self._last, self._where = now, f"since {where} finished"

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Another loop (with its own watchdog) runs meanwhile, e.g. validation between epochs."""
        self._paused = True
        try:
            yield
        finally:
            self._last, self._paused = time.perf_counter(), False

    def __enter__(self) -> Watchdog:
        self._last = time.perf_counter()
        self._thread = threading.Thread(target=self._watch, name=f"watchdog {self.label}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()

    def _watch(self) -> None:
        poll = min(1.0, self.floor_s / 10)
        woke = time.perf_counter()
        while not self._stop.wait(poll):
            now = time.perf_counter()
            if now - woke > poll + STOPPED_S:  # stopped and resumed: the loop could not run either
                self._last += now - woke - poll
            woke = now
            if self._paused:
                continue
            stalled = now - self._last
            limit = self.limit_s()
            if stalled > limit:
                slowest = f"{max(self._recent):.2f} s" if self._recent else "none finished yet"
                self.on_hang(
                    f"error: {self.label}: no progress for {stalled:.0f} s {self._where} (slowest recent batch: "
                    f"{slowest}; limit {limit:.0f} s); {LIKELY_CAUSE}. Stopped; the last finished checkpoint "
                    "is kept (--resume continues from it)"
                )
                return
