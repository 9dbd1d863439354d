"""Old import paths of modules that moved (issue 25: the kernel became the subpackage robustgen.kernel; the
four modules named "eval" got names that say which accuracy they measure).

`import robustgen.models`, `from robustgen.io import atomic_write_json` ... keep working: the old name is
an alias of the *same* module object (so monkeypatching either name patches both), with one
DeprecationWarning naming the new path. One table, MOVED; `install()` runs when robustgen is imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old dotted prefix -> new dotted prefix (a prefix covers its submodules: robustgen.models.sources too)
MOVED = {
    **{f"robustgen.{name}": f"robustgen.kernel.{name}"
       for name in ("cache", "data", "device", "distributed", "energy", "errors", "finite", "io", "models", "pictures", "tables", "threat")},
    "robustgen.checkpoint": "robustgen.kernel.models.checkpoint",
    "robustgen.cli.evaluate": "robustgen.cli.eval",  # the `eval` command, named like every other command's module
    "training.evaluate": "training.pgd_accuracy",
    "training.autoattack_eval": "training.autoattack_accuracy",
    "training.robust_eval": "training.robust_accuracy",
    "samplers.scoring.report": "samplers.scoring.console",  # one `report` in the tree: robustgen.app.report
    "samplers.scoring.cache": "samplers.scoring.feature_cache",  # one `cache` module name: robustgen.kernel.cache
}


def new_name(old: str) -> str | None:
    """The module's current dotted name, or None if `old` did not move."""
    for prefix, target in MOVED.items():
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix):]
    return None


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if new_name(fullname) else None

    def create_module(self, spec):
        target = new_name(spec.name)
        warnings.warn(f"{spec.name} moved to {target}: import it from there", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(target)
        spec.loader_state = module.__spec__  # the import system overwrites __spec__ with the alias's: put it back in exec_module
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state


def install() -> None:
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
