"""robustgen: adversarially robust classifiers as generative models.

Floors (docs/CONVENTIONS.md): robustgen.kernel (models, energies, datasets, checkpoints,
device/precision, file helpers) at the bottom; training and samplers on it; robustgen.app and
robustgen.cli on top. This package re-exports a few kernel names; importing it touches no device.
Modules that moved keep their old import paths for now (robustgen.moved).
"""

from robustgen import moved

from robustgen.kernel.models.checkpoint import load_checkpoint, save_checkpoint
from robustgen.kernel.data import ImageDataset, load_dataset
from robustgen.kernel.energy import cross_entropy_from_energies, delta_energies, joint_energy, marginal_energy
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.models import build_model, model_names

__version__ = "0.1.0"

moved.install()

__all__ = [
    "ImageDataset",
    "RobustgenError",
    "build_model",
    "cross_entropy_from_energies",
    "delta_energies",
    "joint_energy",
    "load_checkpoint",
    "load_dataset",
    "marginal_energy",
    "model_names",
    "save_checkpoint",
]
