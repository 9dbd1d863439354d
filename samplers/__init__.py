"""samplers: class-conditional images from adversarially robust classifiers.

    import samplers
    result = samplers.sample(model, dataset, classes=[3])                    # the defaults: local-pca + normalised L2 PGD + adaptive stop
    result = samplers.sample_from_checkpoint("runs/x/best.pt", classes=["cat"], run=samplers.RunOptions(n=16),
                                             init=samplers.InitConfig(kind="gaussian"),
                                             sampler=samplers.SamplerConfig(kind="pgd", steps=60))
    result.images  # (N, H, W, C) uint8;  result.labels, .energy_joint, .energy_marginal, .steps, .grad_evals

Pieces: config.py (InitConfig, SamplerConfig, StopConfig: what chains compute; RunOptions: how a run executes),
initializers/ (where chains start, fitted and cached), steps.py (one SGLD or PGD step), energies.py (what is
descended), stopping.py (when a chain stops), chains.py (the chain loop), sampling.py (the run and its run dir:
`samplers.sample`), from_checkpoint.py (any model spec), calibration.py / calibrated.py (the chain chosen per model),
grid.py (pictures). sample_from_checkpoint uses a model's calibrated chain when it has one.
"""

from samplers.config import InitConfig, RunOptions, SamplerConfig, StopConfig
from samplers.energies import energy_and_grad, energy_function
from samplers.from_checkpoint import load_checkpoint_dataset, sample_from_checkpoint
from samplers.grid import grid_array, save_grid
from samplers.initializers import fit_initializer
from samplers.sampling import SampleResult, load_result, run_chains, sample
from samplers.steps import pgd_step, sgld_step
from samplers.stopping import reference_energies

__all__ = [
    "InitConfig",
    "RunOptions",
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
