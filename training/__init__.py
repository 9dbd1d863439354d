"""Adversarial training with the Delta Energy Regularizer, energy diagnostics and robust evaluation.

    from training import TrainConfig, train, evaluate_robustness
    result = train(TrainConfig(dataset="digits", der=True))
    result.best, result.metrics["test_pgd_acc"]
"""

from training.config import TrainConfig, resolve_config
from training.der import abnormal_mask, der_loss, der_penalty
from training.evaluate import evaluate_robustness
from training.loop import TrainResult, train
from training.methods import METHODS

__all__ = [
    "METHODS",
    "TrainConfig",
    "TrainResult",
    "abnormal_mask",
    "der_loss",
    "der_penalty",
    "evaluate_robustness",
    "resolve_config",
    "train",
]
