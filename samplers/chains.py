"""The chain loop: a batch of sampling chains advanced one gradient evaluation at a time, continuously refilled.

A chain is (start x0, class y, its own random streams). Each iteration costs one
gradient evaluation per active chain (`energy_and_grad`), asks the stopping rule
which chains are done, and moves the others one sampler step (steps.py). Done
chains leave the batch; with `refill`, new chains from the queue take their
slots at once, so the device stays full (continuous batching). Every chain draws
its randomness (start, SGLD noise) from its own seeded generators, so its
trajectory does not depend on which chains share its batch: the images are the
same with and without refill, in any batch size, on any number of ranks.

    chains = ChainBatch.start(ids, x0, y, thresholds, noise_generators)
    grad_evals = run_queue(model, queue, sampler=..., stop=..., batch_size=250, refill=True, on_finish=store)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Protocol, Sequence

import torch
from torch import Tensor, nn

from robustgen.kernel.energy import joint_energy, marginal_energy
from samplers.config import SamplerConfig, StopConfig
from samplers.energies import EnergyFn, energy_and_grad, energy_function
from samplers.gradients import apply_transforms, draw_transforms, low_pass, precondition
from samplers.steps import pgd_step, sgld_step
from samplers.stopping import stop_now


@dataclass
class ChainBatch:
    """The state of a set of chains (tensors over chains, on the model's device)."""

    ids: Tensor  # (B,) global chain index
    x: Tensor  # (B, C, H, W) current images in [0, 1]
    velocity: Tensor  # SGLD momentum
    x0: Tensor  # starts (PGD's ball is centred there)
    y: Tensor  # (B,) class
    threshold: Tensor  # (B, 2) stop thresholds on E(x, y) and E(x) (-inf: never)
    eta: Tensor  # (B,) SGLD step size; nan until calibrated at the chain's first step
    steps: Tensor  # (B,) steps taken
    best: Tensor  # (B,) best E(x, y) so far (patience rule)
    since: Tensor  # (B,) steps since `best` last improved
    noise: list  # one device generator per chain (SGLD noise)

    @classmethod
    def start(cls, ids: Tensor, x0: Tensor, y: Tensor, threshold: Tensor, noise: Sequence[torch.Generator]) -> "ChainBatch":
        n, device = len(x0), x0.device
        return cls(
            ids=ids.to(device), x=x0.clone(), velocity=torch.zeros_like(x0), x0=x0, y=y.to(device), threshold=threshold.to(device),
            eta=torch.full((n,), float("nan"), device=device), steps=torch.zeros(n, dtype=torch.long, device=device),
            best=torch.full((n,), float("inf"), device=device), since=torch.zeros(n, dtype=torch.long, device=device), noise=list(noise),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, mask: Tensor) -> "ChainBatch":
        index = mask.nonzero().squeeze(1) if mask.dtype == torch.bool else mask
        picked = {f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "noise"}
        return ChainBatch(**picked, noise=[self.noise[i] for i in index.tolist()])

    @staticmethod
    def concat(a: "ChainBatch | None", b: "ChainBatch | None") -> "ChainBatch | None":
        if a is None or len(a) == 0:
            return b
        if b is None or len(b) == 0:
            return a
        joined = {f.name: torch.cat([getattr(a, f.name), getattr(b, f.name)]) for f in fields(a) if f.name != "noise"}
        return ChainBatch(**joined, noise=a.noise + b.noise)


class ChainQueue(Protocol):
    """Where new chains come from (samplers.sampling.ChainSource)."""

    def take(self, k: int) -> ChainBatch | None: ...


# on_finish(chains, energy_joint, energy_marginal): chains that are done, with their final energies
FinishFn = Callable[[ChainBatch, Tensor, Tensor], None]
TraceFn = Callable[[ChainBatch], None]  # sees every batch before it moves (for start -> middle -> final strips)
# observe(chains, energy_joint, energy_marginal): every chain's energies at its current x, before the stop rule reads them
ObserveFn = Callable[[ChainBatch, Tensor, Tensor], None]


def run_queue(
    model: nn.Module, queue: ChainQueue, *, sampler: SamplerConfig, stop: StopConfig, batch_size: int, refill: bool,
    on_finish: FinishFn, trace: TraceFn | None = None, spectrum: Tensor | None = None, observe: ObserveFn | None = None,
) -> int:
    """Advance chains from `queue` until it is empty; returns the gradient evaluations spent."""
    energy = energy_function(sampler.energy, marginal_weight=sampler.marginal_weight)
    active, grad_evals = None, 0
    while True:
        if active is None or len(active) == 0 or refill:
            active = ChainBatch.concat(active, queue.take(batch_size - (len(active) if active is not None else 0)))
        if active is None or len(active) == 0:
            return grad_evals
        exhausted = active.steps >= sampler.steps
        if exhausted.any():  # out of steps: measure where they ended (a forward, no gradient)
            _finish_with_forward(model, active.select(exhausted), on_finish)
            active = active.select(~exhausted)
            continue
        if trace is not None:
            trace(active)
        active, done, e_joint, e_marginal = advance(model, active, sampler=sampler, stop=stop, energy=energy, spectrum=spectrum, observe=observe)
        grad_evals += len(done) + len(active)
        if len(done):
            on_finish(done, e_joint, e_marginal)


def advance(model: nn.Module, chains: ChainBatch, *, sampler: SamplerConfig, stop: StopConfig, energy: EnergyFn, spectrum: Tensor | None = None,
            observe: ObserveFn | None = None):
    """One gradient evaluation for every chain; returns (moved chains, stopped chains, their E(x, y), their E(x))."""
    grad, logits = read_gradient(model, chains, sampler=sampler, energy=energy, spectrum=spectrum)
    e_joint, e_marginal = joint_energy(logits, chains.y), marginal_energy(logits)
    if observe is not None:
        observe(chains, e_joint, e_marginal)
    stopping, chains.best, chains.since = stop_now(e_joint, e_marginal, chains.threshold, chains.best, chains.since, stop)
    done = chains.select(stopping)
    moving = ~stopping
    chains, grad = chains.select(moving), grad[moving]
    if len(chains):
        _move(chains, grad, sampler)
    return chains, done, e_joint[stopping], e_marginal[stopping]


def read_gradient(model: nn.Module, chains: ChainBatch, *, sampler: SamplerConfig, energy: EnergyFn, spectrum: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """d energy / dx for every chain (and the logits it was read with), under the sampler's transformations and low-pass."""
    height = chains.x.shape[-2]
    jitter = sampler.jitter_pixels(height)
    if jitter or sampler.flip:
        shifts, flips = draw_transforms(chains.noise, jitter=jitter, flip=sampler.flip, device=chains.x.device)
        _, grad, logits = batch_invariant_energy_and_grad(model, apply_transforms(chains.x, shifts, flips), chains.y, energy)
        grad = apply_transforms(grad, shifts, flips, inverse=True)
    else:
        _, grad, logits = batch_invariant_energy_and_grad(model, chains.x, chains.y, energy)
    grad = low_pass(grad, sigma=sampler.smooth_sigma(height))
    if spectrum is not None:
        grad = precondition(grad, spectrum, power=sampler.spectrum)
    return grad, logits


def _move(chains: ChainBatch, grad: Tensor, sampler: SamplerConfig) -> None:
    """One sampler step for every chain, in place."""
    if sampler.kind == "sgld":
        new = torch.isnan(chains.eta)
        if new.any():
            chains.eta[new] = calibrated_eta(grad[new], sampler)
        noise = torch.stack([torch.randn(chains.x.shape[1:], generator=g, device=chains.x.device) for g in chains.noise])
        eta = chains.eta.view(-1, *([1] * (chains.x.dim() - 1)))
        chains.x, chains.velocity = sgld_step(chains.x, chains.velocity, grad, noise, step_size=eta, noise_std=sampler.noise, momentum=sampler.momentum)
    else:
        step_size = sampler.resolved_step_size(chains.x[0].numel())
        chains.x = pgd_step(chains.x, grad, chains.x0, step_size=step_size, norm=sampler.norm, eps=sampler.eps)
    chains.steps = chains.steps + 1


def calibrated_eta(grad: Tensor, sampler: SamplerConfig) -> Tensor:
    """SGLD eta per chain: the given step size, or (step_size None) the eta whose first drift
    step (eta/2) grad E moves pixels by `drift` rms (gradient scales differ ~50x between models)."""
    if sampler.step_size is not None:
        return torch.full((len(grad),), float(sampler.step_size), device=grad.device)
    rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
    return 2 * sampler.drift / rms


def _finish_with_forward(model: nn.Module, chains: ChainBatch, on_finish: FinishFn) -> None:
    with torch.no_grad():
        logits = _forward_padded(model, chains.x)
    on_finish(chains, joint_energy(logits, chains.y), marginal_energy(logits))


# oneDNN (CPU) computes batches of fewer than 6 images with another kernel path whose last bits differ
# (measured: fp32 and bf16, 8x8 and 32x32 PreActResNets, 1 and 2 threads); smaller batches are padded
# to this size so a chain's numbers never depend on how many chains share its batch.
MIN_BATCH = 8


def _padded(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    reps = -(-MIN_BATCH // len(x))
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:MIN_BATCH], y.repeat(reps)[:MIN_BATCH]


def batch_invariant_energy_and_grad(model: nn.Module, x: Tensor, y: Tensor, energy: EnergyFn):
    """energy_and_grad, with batches below MIN_BATCH padded (see there); samples stay independent in eval mode."""
    if len(x) >= MIN_BATCH:
        return energy_and_grad(model, x, y, energy)
    n = len(x)
    value, grad, logits = energy_and_grad(model, *_padded(x, y), energy)
    return value[:n], grad[:n], logits[:n]


def _forward_padded(model: nn.Module, x: Tensor) -> Tensor:
    if len(x) >= MIN_BATCH:
        return model(x)
    return model(_padded(x, torch.zeros(len(x), dtype=torch.long, device=x.device))[0])[: len(x)]
