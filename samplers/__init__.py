"""samplers: class-conditional images from adversarially robust classifiers.

    import samplers
    result = samplers.sample(model, dataset, classes=[3], n=1000)            # local-pca + sgld + adaptive stop
    result = samplers.sample_from_checkpoint("runs/x/best.pt", classes=["cat"], n=16,
                                             init=samplers.InitConfig(kind="gaussian"),
                                             sampler=samplers.SamplerConfig(kind="pgd"))
    result.images  # (N, H, W, C) uint8;  result.labels, .energy_joint, .energy_marginal, .steps, .grad_evals

Pieces: initializers/ (where chains start, fitted and cached), steps.py (one SGLD
or PGD step), energies.py (what is descended), stopping.py (when a chain stops),
sampling.py (the loop and the run dir: `samplers.sample`), grid.py (pictures).
"""

from samplers.config import InitConfig, SamplerConfig, StopConfig
from samplers.energies import energy_and_grad, energy_function
from samplers.from_checkpoint import load_checkpoint_dataset, sample_from_checkpoint
from samplers.grid import grid_array, save_grid
from samplers.initializers import fit_initializer
from samplers.sampling import SampleResult, load_result, run_chains, sample
from samplers.steps import pgd_step, sgld_step
from samplers.stopping import reference_energies

__all__ = [
    "InitConfig",
    "SampleResult",
    "SamplerConfig",
    "StopConfig",
    "energy_and_grad",
    "energy_function",
    "fit_initializer",
    "grid_array",
    "load_checkpoint_dataset",
    "load_result",
    "pgd_step",
    "reference_energies",
    "run_chains",
    "sample",
    "sample_from_checkpoint",
    "save_grid",
    "sgld_step",
]

from samplers.scoring import ScoreResult, score  # noqa: E402  (scoring reuses the pieces above)

__all__ += ["ScoreResult", "score"]
