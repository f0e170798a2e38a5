# SPDX-License-Identifier: Apache-2.0
"""Level-shift detection with hysteresis, shared by offline phase splitting and live events.

A shift is confirmed only when `hold` consecutive values sit beyond the threshold on the same side
of the current level, so one noisy sample never fires; the confirmed level then becomes the
reference, so oscillation around the new level does not fire again.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field


@dataclass
class LevelShiftDetector:
    rel_threshold: float = 0.5  # relative change that counts as material
    abs_threshold: float = 0.0  # and at least this much in absolute terms (ignores noise near zero)
    hold: int = 3  # consecutive samples needed to confirm
    warmup: int = 3  # samples averaged for the first reference level
    level: float | None = None
    _warm: list[float] = field(default_factory=list)
    _pending: list[float] = field(default_factory=list)
    _side: int = 0

    def update(self, value: float) -> tuple[float, float] | None:
        """Feed one value; returns (old_level, new_level) when a shift is confirmed."""
        if self.level is None:
            self._warm.append(value)
            if len(self._warm) >= self.warmup:
                self.level = sum(self._warm) / len(self._warm)
            return None
        delta = value - self.level
        if abs(delta) > max(self.abs_threshold, self.rel_threshold * abs(self.level)):
            side = 1 if delta > 0 else -1
            if side != self._side:
                self._pending, self._side = [], side
            self._pending.append(value)
            if len(self._pending) >= self.hold:
                old, new = self.level, sum(self._pending) / len(self._pending)
                self.level, self._pending, self._side = new, [], 0
                return old, new
            return None
        self._pending, self._side = [], 0
        self.level += 0.2 * delta  # follow slow drift inside the band
        return None

    @property
    def pending(self) -> int:
        return len(self._pending)


def split_phases(
    times: list[float], values: list[float], *, rel: float = 0.5, abs_min: float = 0.2, hold: int = 3
) -> list[tuple[int, int]]:
    """Index ranges [start, end) of phases whose level differs materially from their neighbours."""
    if not values:
        return []
    det = LevelShiftDetector(rel_threshold=rel, abs_threshold=abs_min, hold=hold, warmup=min(hold, len(values)))
    bounds = [0]
    for i, v in enumerate(values):
        if det.update(v) is not None:
            bounds.append(max(bounds[-1] + 1, i - hold + 1))
    bounds.append(len(values))
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
