"""Learning-rate schedules as functions of fractional epoch t in [0, epochs]."""

from __future__ import annotations

import numpy as np


def learning_rate(t: float, *, schedule: str, lr: float, epochs: int) -> float:
    """cyclic: one-cycle triangle 0 -> lr at 40% -> 0 (Wong et al. 2020, airbench style);
    piecewise: lr, lr/10 after 50% and lr/100 after 75% of training (Rice et al. 2020)."""
    if schedule == "cyclic":
        return float(np.interp(t, [0, 0.4 * epochs, epochs], [0, lr, 0]))
    if schedule == "piecewise":
        return lr if t < 0.5 * epochs else lr / 10 if t < 0.75 * epochs else lr / 100
    raise ValueError(f"unknown schedule {schedule!r}")
