"""Generative strength: can this classifier draw on its own?

    strength = generative_strength("runs/cifar-generation/best.pt", judge="python:resnet20.py:resnet20=w.th", n=500)
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
from samplers.scoring import result as keys

def generative_strength(
    checkpoint: str | os.PathLike,
    *,
    judge: str | os.PathLike,
    n: int = 500,
    seed: int = 0,
    dataset: str | None = None,
    data_root: str | os.PathLike | None = None,
    device: str = "auto",
    model_dir: str | os.PathLike | None = None,
    trust_checkpoint: bool = False,
    mean: str | None = None,
    std: str | None = None,
    precision: str = "fp32",
    progress: bool = False,
) -> dict:
    """Santurkar samples of every class (n in all) judged by `judge` (a spec, also the feature extractor)."""
    from robustgen.models.sources import load_classifier
    from samplers.from_checkpoint import load_checkpoint_dataset
    from samplers.sampling import sample
    from samplers.scoring import score

    model, meta = load_classifier(checkpoint, device=device, model_dir=model_dir, trust_checkpoint=trust_checkpoint, mean=mean, std=std, data=dataset)
    data = load_checkpoint_dataset(meta, dataset=dataset, data_root=data_root)
    init, sampler, stop = SANTURKAR
    result = sample(model, data, n=n, init=init, sampler=sampler, stop=stop, seed=seed, precision=precision, progress=progress)
    scored = score(result.images, labels=result.labels, ref=dataset or meta.get("dataset"), ref_split="test", metrics=("fid", "prc"),
                   features=judge, judge=judge, per_class=False, memorisation=False, data_root=data_root, device=device)
    metrics = scored.metrics
    return {
        "n": n, "seed": seed, "judge": str(judge), "sampler": "santurkar: gaussian start + 60 fixed L2 PGD steps on E(x, y)",
        "judge_accuracy": metrics.get(keys.KEY_JUDGE_ACCURACY), "fid_test": metrics.get(keys.KEY_FID),
        "precision_test": metrics.get(keys.KEY_PRECISION), "recall_test": metrics.get(keys.KEY_RECALL),
        "chance": 1.0 / max(1, len(data.classes)),
    }
