"""Finite numbers: the one check every float option and every config field goes through.

NaN passes every range check written as `if x < 0: refuse` (all comparisons with NaN
are false), and inf passes most of the rest, so a non-finite number would run to the
end and write black images or a diverged model with exit status 0. Configs inherit
`FiniteFields` (checked on construction, so the Python API gets it too); the CLI's
FINITE click type (robustgen.cli.common) calls `finite` with the option's name first,
so a user sees `--step-size nan` rather than a field name.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from robustgen.kernel.errors import RobustgenError


def finite(value: Any, *, name: str) -> float:
    """`value` as a float, or one line saying it is not a finite number (NaN, inf, or not a number at all)."""
    if isinstance(value, bool):
        raise RobustgenError(f"{name} {value!r} is not a number: give a finite number such as 0.5")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RobustgenError(f"{name} {value!r} is not a number: give a finite number such as 0.5") from None
    if not math.isfinite(number):
        raise RobustgenError(f"{name} {value!r} is not a finite number: give a finite number such as 0.5 (NaN and inf are refused)")
    return number


def check_finite_fields(config: Any) -> None:
    """Refuse any float field of a config dataclass (or a float given for an int field) that is NaN or inf."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float):
            finite(value, name=f"{type(config).__name__}.{field.name}")


class FiniteFields:
    """Mixin for frozen config dataclasses: every float field is checked to be finite when the config is built."""

    def __post_init__(self) -> None:
        check_finite_fields(self)
