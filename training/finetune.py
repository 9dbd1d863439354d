"""A generative run's state around the objective of training.generative: start, contrast, T windows, EMA, selection.

- The start: `--init-from` loads a checkpoint's weights (`load_init`); `finetune_config` makes the run
  inherit that run's recorded training setup (method, threat model, width ...) under the options given.
- Held out: `holdout` training images (a fixed seeded choice) are never trained on in a generative run;
  with `holdout` OOD images as starts they pick best.pt.
- Each step draws OOD images (seeded per epoch and rank), pushes them T steps up s (eval mode) and hands
  them to the training step. s of the real and contrast images fills AUC windows of `gen_auc_window`
  images (counted in global batches, so all ranks close a window together; the AUC is averaged over
  ranks); after each window T rises if the AUC passed the threshold. Windows restart every epoch, so an
  epoch is still the unit of resumption.
- EMA weights from the first generative epoch; best.pt holds them. The selection statistic (lower is
  better): the Frechet distance, in the features of the model as it was when fine-tuning began (fixed,
  so epochs compare), between the held-out real images and samples the EMA model draws from the
  held-out OOD starts with `gen_steps_max` ascent steps. Never the test split.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from robustgen.kernel.models.checkpoint import load_weights, read_checkpoint
from robustgen.kernel.data import to_float
from robustgen.kernel.data.pool import read_image_pool
from robustgen.kernel.device import derived_seed
from robustgen.kernel.errors import RobustgenError
from training.config import TrainConfig
from training.generative import ascend_energy_logit, ascent_step_size, auc, frechet_distance, next_steps, update_ema

# What a fine-tuning run inherits from the recorded config of the run it starts from (options given explicitly win).
INHERITED = ("method", "norm", "eps", "step_size", "steps", "restarts", "der", "der_beta", "der_gamma", "der_squared", "arch", "width",
             "batch_size", "channels", "momentum", "weight_decay", "eval_pgd_steps", "eval_subset")


@dataclass
class GenerativeState:
    ood: Tensor  # uint8 NHWC on the device: the contrast pool
    starts: Tensor  # float NCHW: held-out OOD starts of the selection samples
    heldout: Tensor  # float NCHW: held-out real training images
    step_size: float  # L2 ascent step, pixel units
    steps: int  # T now
    ema: nn.Module | None = None  # from the first generative epoch
    reference: nn.Module | None = None  # the model as fine-tuning began: features of the selection statistic
    window: list = field(default_factory=list)  # (s_real, s_ood) of the open window
    window_batches: int = 0
    windows: list = field(default_factory=list)  # [{"auc", "steps"}] of this epoch's closed windows


def is_generative_epoch(config: TrainConfig, epoch: int) -> bool:
    return config.generative and epoch >= config.gen_start


def finetune_config(init_from: str, given: dict) -> TrainConfig:
    """TrainConfig starting from `init_from`: its run's recorded training setup (INHERITED), then `given` on top."""
    meta = _init_meta(init_from)
    recorded = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    inherited = {k: recorded[k] for k in INHERITED if k in recorded}
    if "width" not in inherited and "width" in (meta.get("arch_args") or {}):
        inherited["width"] = meta["arch_args"]["width"]
    inherited.setdefault("arch", meta["arch"])
    return TrainConfig(**{**inherited, **given, "init_from": init_from})


def _init_meta(init_from: str) -> dict:
    try:
        return read_checkpoint(init_from)["meta"]
    except RobustgenError as exc:
        raise RobustgenError(f"--init-from {init_from}: {exc}") from None


def load_init(net: nn.Module, config: TrainConfig, dataset) -> None:
    """Load --init-from's weights into `net`; its input shape and classes must be the dataset's."""
    payload = read_checkpoint(config.init_from)
    meta = payload["meta"]
    shape, classes = tuple(meta.get("input_shape") or ()), len(meta.get("classes") or ())
    if shape != tuple(dataset.image_shape) or classes != dataset.num_classes:
        raise RobustgenError(f"--init-from {config.init_from} takes {shape} images in {classes} classes but {config.dataset} has "
                             f"{tuple(dataset.image_shape)} in {dataset.num_classes}: start from a model trained on {config.dataset}")
    load_weights(net, payload["state_dict"], source=str(config.init_from))


def holdout_split(n_train: int, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices): a fixed seeded choice of `holdout` images, both sorted."""
    if config.holdout * 2 > n_train:
        raise RobustgenError(f"--holdout {config.holdout} is more than half of the {n_train} training images: pass a smaller --holdout")
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(derived_seed(config.seed, 11))).numpy()
    return np.sort(order[config.holdout :]), np.sort(order[: config.holdout])


def build_state(config: TrainConfig, dataset, heldout_images: np.ndarray, device: torch.device) -> GenerativeState:
    """The OOD pool (resized to the model's input, channels converted) and the held-out sets, on the device."""
    images = read_image_pool(config.ood, shape=tuple(dataset.image_shape), root=config.data_root, resize=config.ood_resize,
                             resize_hint="allow resizing (drop --no-ood-resize) or give images of the model's size").images
    if len(images) < 2 * config.holdout:
        raise RobustgenError(f"--ood {config.ood} holds {len(images)} images, fewer than twice --holdout {config.holdout}: give more images or a smaller --holdout")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(derived_seed(config.seed, 12))).numpy()
    starts, pool = np.sort(order[: config.holdout]), np.sort(order[config.holdout :])
    return GenerativeState(
        ood=torch.as_tensor(images[pool]).to(device), starts=to_float(images[starts], device), heldout=to_float(heldout_images, device),
        step_size=ascent_step_size(config.gen_step_size, int(np.prod(dataset.image_shape))), steps=config.gen_steps,
    )


def begin_epoch(state: GenerativeState, net: nn.Module) -> None:
    """At the first generative epoch: EMA and reference start as copies of the model; every epoch: fresh windows."""
    if state.ema is None:
        state.ema, state.reference = (_frozen_copy(net) for _ in range(2))
    state.window, state.window_batches, state.windows = [], 0, []


def _frozen_copy(net: nn.Module) -> nn.Module:
    copied = copy.deepcopy(net).eval()
    for p in copied.parameters():
        p.requires_grad_(False)
    return copied


def contrast_batch(state: GenerativeState, model: nn.Module, n: int, generator: torch.Generator) -> Tensor:
    """n OOD images (drawn with `generator`) after T L2-normalised ascent steps on s."""
    pick = torch.randint(len(state.ood), (n,), generator=generator).to(state.ood.device)
    x, _ = ascend_energy_logit(model, to_float(state.ood[pick], state.ood.device), steps=state.steps, step_size=state.step_size)
    return x


def after_step(state: GenerativeState, net: nn.Module, stats: dict, config: TrainConfig, dist) -> None:
    """EMA update; the step's s values join the window; a full window may raise T (the same on every rank)."""
    update_ema(state.ema, net, decay=config.ema_decay)
    state.window.append((stats["s_real_values"], stats["s_ood_values"]))
    state.window_batches += 1
    if config.gen_auc_window and state.window_batches >= window_batches(config):
        close_window(state, config, dist)


def window_batches(config: TrainConfig) -> int:
    """Global batches per AUC window (gen_auc_window 0: the whole epoch is one window, closed by end_epoch)."""
    return max(1, math.ceil(config.gen_auc_window / config.batch_size)) if config.gen_auc_window else 0


def end_epoch(state: GenerativeState, config: TrainConfig, dist) -> None:
    """Close the epoch's open window: all of it when windows are epochs, else a tail of at least half a window."""
    if state.window and state.window_batches * 2 >= window_batches(config):
        close_window(state, config, dist)


def close_window(state: GenerativeState, config: TrainConfig, dist) -> None:
    """AUC of the window (mean over ranks), then T for the next one."""
    if not state.window:
        return
    real, ood = (torch.cat([w[i] for w in state.window]) for i in (0, 1))
    local = torch.tensor([auc(real, ood), len(real)], dtype=torch.float64, device=real.device)
    total_auc, images = dist.all_reduce_sum(local).tolist()
    window_auc = total_auc / dist.world_size
    state.windows.append({"auc": window_auc, "steps": state.steps, "images": int(images)})
    state.steps = next_steps(state.steps, window_auc, threshold=config.gen_auc_threshold, increment=config.gen_steps_increment,
                             maximum=config.gen_steps_max)
    state.window, state.window_batches = [], 0


def epoch_fields(state: GenerativeState, sums: dict, steps_at_start: int) -> dict:
    """metrics.jsonl fields of a generative epoch: AUC (last window, and each), T, energies E = -s of real and contrast."""
    n, n_ood = max(float(sums["n"]), 1.0), max(float(sums["n_ood"]), 1.0)
    return {
        "generative": True,
        "gen_auc": state.windows[-1]["auc"] if state.windows else None,
        "gen_auc_windows": state.windows,
        "gen_steps_start": steps_at_start,
        "gen_steps": state.steps,
        "gen_loss": float(sums["gen_loss"]) / n,
        "energy_real_mean": -float(sums["s_real"]) / n,
        "energy_ood_mean": -float(sums["s_ood"]) / n_ood,
    }


def selection_statistic(state: GenerativeState, config: TrainConfig) -> float:
    """Held-out Frechet distance of the EMA model's samples (see the module docstring); lower is better."""
    with torch.random.fork_rng(devices=[state.starts.device] if state.starts.device.type == "cuda" else []):
        samples, _ = ascend_energy_logit(state.ema, state.starts, steps=config.gen_steps_max, step_size=state.step_size)
    with torch.no_grad():
        fake, real = state.reference.features(samples), state.reference.features(state.heldout)
    return frechet_distance(real.flatten(1), fake.flatten(1))


def state_dict(state: GenerativeState) -> dict:
    return {"steps": state.steps, "ema": state.ema.state_dict() if state.ema is not None else None,
            "reference": state.reference.state_dict() if state.reference is not None else None}


def load_state(state: GenerativeState, saved: dict, net: nn.Module) -> None:
    """Restore T, EMA and reference (resume); `net` gives their architecture."""
    state.steps = int(saved["steps"])
    if saved.get("ema") is not None:
        state.ema, state.reference = _frozen_copy(net), _frozen_copy(net)
        state.ema.load_state_dict(saved["ema"])
        state.reference.load_state_dict(saved["reference"])
