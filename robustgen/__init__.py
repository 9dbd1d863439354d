"""robustgen: adversarially robust classifiers as generative models.

The kernel shared by `training` and `samplers`: models, energies, datasets,
checkpoints, device/precision and file helpers. Importing it touches no device.
"""

from robustgen.models.checkpoint import load_checkpoint, save_checkpoint
from robustgen.data import ImageDataset, load_dataset
from robustgen.energy import cross_entropy_from_energies, delta_energies, joint_energy, marginal_energy
from robustgen.errors import RobustgenError
from robustgen.models import build_model, model_names

__version__ = "0.1.0"

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
