"""Captures whose processing raised, held back for a while so they stall nothing.

A capture stays ``received`` until its result is stored; if processing it raises (a full disk
while its arrays are written, a fault nobody foresaw), the worker holds it back here for
``HOLD_SECONDS`` (growing with each try, then the last again) and goes on with the captures
behind it, instead of failing the pass and meeting the same capture first again a second
later. In memory only: a restart tries every received capture at once, as it should.
"""

from __future__ import annotations

import threading

HOLD_SECONDS = (5, 30, 120, 600)


class Held:
    def __init__(self) -> None:
        self._until: dict[int, tuple[float, int]] = {}  # capture → (not before, tries)
        self._lock = threading.Lock()

    def waiting(self, now: float) -> list[int]:
        """The captures still held back at ``now``."""
        with self._lock:
            return [key for key, (until, _) in self._until.items() if until > now]

    def failed(self, capture_id: int, now: float) -> tuple[int, int]:
        """Hold a capture back after a failed try: (tries so far, seconds held)."""
        with self._lock:
            tries = self._until.get(capture_id, (0.0, 0))[1] + 1
            wait = HOLD_SECONDS[min(tries, len(HOLD_SECONDS)) - 1]
            self._until[capture_id] = (now + wait, tries)
            return tries, wait

    def done(self, capture_id: int) -> None:
        with self._lock:
            self._until.pop(capture_id, None)
