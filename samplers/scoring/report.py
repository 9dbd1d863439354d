"""Deprecated: the console table of a score moved to samplers.scoring.console (one `report` in the tree: robustgen.app.report)."""

from samplers.scoring.console import *  # noqa: F401,F403
from samplers.scoring.console import format_result  # noqa: F401
