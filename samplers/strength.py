"""Generative strength: can this classifier draw on its own?

    strength = generative_strength("runs/cifar-generation/best.pt", judge="python:resnet20.py:resnet20=w.th", run=RunOptions(n=500))
    strength["judge_accuracy"], strength["fid_test"], strength["recall_test"]

Classifier-only samples (Santurkar et al. 2019: a class-conditional Gaussian start, then
60 fixed normalised-gradient steps on the class logit, no data-dependent start) are judged
by an independent standard classifier: its accuracy on them, and FID / precision / recall
against the test split in its penultimate features. A model whose gradients carry little
image (typical of L-inf single-step training) scores near chance; models with perceptually
aligned gradients (L2 training at a large radius) are recognised. The sampler's own start
cannot help here, so this measures the model, not the sampler.
"""

from __future__ import annotations

import os

from samplers.compare import SANTURKAR
from samplers.config import RunOptions
from samplers.from_checkpoint import ModelSource
from samplers.scoring import result as keys


def generative_strength(
    checkpoint: str | os.PathLike,
    *,
    judge: str | os.PathLike,
    run: RunOptions | None = None,
    source: ModelSource = ModelSource(),
    progress: bool = False,
) -> dict:
    """Santurkar samples of every class (run.n in all) judged by `judge` (a spec, also the feature extractor)."""
    from samplers.from_checkpoint import load_for_sampling
    from samplers.sampling import sample
    from samplers.scoring import score

    run = run if run is not None else RunOptions()
    run.validate()
    model, meta, data, classes = load_for_sampling(checkpoint, source=source, run=run)
    init, sampler, stop = SANTURKAR
    result = sample(model, data, classes=classes, init=init, sampler=sampler, stop=stop, run=run, progress=progress)
    scored = score(result.images, labels=result.labels, ref=source.dataset or meta.get("dataset"), ref_split="test", metrics=("fid", "prc"),
                   features=judge, judge=judge, per_class=False, memorisation=False, data_root=source.data_root, device=run.device)
    metrics = scored.metrics
    return {
        "n": run.n, "seed": run.seed, "judge": str(judge), "sampler": "santurkar: gaussian start + 60 fixed L2 PGD steps on E(x, y)",
        "judge_accuracy": metrics.get(keys.KEY_JUDGE_ACCURACY), "fid_test": metrics.get(keys.KEY_FID),
        "precision_test": metrics.get(keys.KEY_PRECISION), "recall_test": metrics.get(keys.KEY_RECALL),
        "chance": 1.0 / max(1, len(data.classes)),
    }
