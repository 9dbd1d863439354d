"""Adversarial training with the Delta Energy Regularizer, energy diagnostics and robust evaluation.

    from training import TrainConfig, train, evaluate_robustness
    result = train(TrainConfig(dataset="digits", der=True))
    result.best, result.metrics["test_pgd_acc"]

    # generative fine-tuning (DAT) of a robust run: inherits its method, threat model and width
    config = finetune_config("runs/digits-generation/best.pt", {"dataset": "digits", "generative": True, "ood": "npz:cifar10-subset.npz"})
    train(config).best   # the EMA weights picked on held-out training images
"""

from training.config import TrainConfig, resolve_config
from training.der import abnormal_mask, der_loss, der_penalty
from training.pgd_accuracy import evaluate_robustness
from training.finetune import finetune_config
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
    "finetune_config",
    "resolve_config",
    "train",
]
