"""The one collapse rule of catastrophic overfitting (CO): robust accuracy falling below half its best.

Three readers use it: the epoch-end alarm (`training.diagnostics.co_alarm`, on test PGD accuracy),
the in-epoch monitor (`training.monitor.alarm_reason`, on smoothed PGD-2 accuracy of training images),
and the experiments, which label a run's collapse epoch with `collapse_epoch` and score the alarms
against it. Changing a constant here changes all three together.
"""

from __future__ import annotations

COLLAPSE_FRACTION = 0.5  # robust accuracy below this fraction of its best so far ...
COLLAPSE_FLOOR = 0.10  # ... once the best so far is at least this (else there is nothing to collapse)


def collapsed(accuracy: float, best: float) -> bool:
    """Has robust `accuracy` collapsed, given the `best` accuracy measured before it?"""
    return best >= COLLAPSE_FLOOR and accuracy < COLLAPSE_FRACTION * best


def collapse_epoch(records: list[dict], *, key: str = "test_pgd_acc") -> int | None:
    """The first epoch (metrics.jsonl records, in order) whose `key` accuracy collapsed against the best before it, or None."""
    best = 0.0
    for record in records:
        if collapsed(record[key], best):
            return record["epoch"]
        best = max(best, record[key])
    return None
