"""Deprecated: the reference-feature cache moved to samplers.scoring.feature_cache (one `cache` module name: robustgen.kernel.cache)."""

from samplers.scoring.feature_cache import *  # noqa: F401,F403
