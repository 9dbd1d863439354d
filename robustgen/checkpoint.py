"""Deprecated: checkpoints moved to robustgen.models.checkpoint (they build models, so they live with them: no
robustgen/ <-> robustgen/models/ folder loop). This re-export keeps old imports working."""

from robustgen.models.checkpoint import *  # noqa: F401,F403
from robustgen.models.checkpoint import load_checkpoint, model_meta, read_checkpoint, save_checkpoint  # noqa: F401
