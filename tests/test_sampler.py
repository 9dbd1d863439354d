"""Sampler steps, energies, adaptive stopping, the loop, reproducibility and resume."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import samplers
import samplers.sampling as sample_module  # the loop module (samplers.sample is its function)
from robustgen.kernel.models.checkpoint import load_checkpoint
from robustgen.kernel.errors import RobustgenError
from samplers.config import RunOptions
from robustgen.kernel.io import sha256_file
from samplers import InitConfig, SamplerConfig, StopConfig, energy_function, pgd_step, run_chains, sgld_step


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTGEN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def robust(robust_digits_checkpoint):
    model, meta = load_checkpoint(robust_digits_checkpoint)
    return model


def test_sgld_step_with_zero_step_and_noise_is_identity():
    x = torch.rand(4, 3, 5, 5)
    grad = torch.randn_like(x) * 10
    new_x, v = sgld_step(x, torch.zeros_like(x), grad, torch.randn_like(x), step_size=0.0, noise_std=0.0, momentum=0.9)
    assert torch.equal(new_x, x) and torch.equal(v, torch.zeros_like(x))


def test_sgld_step_follows_the_update_rule():
    x, v, g, z = torch.full((2, 1, 2, 2), 0.5), torch.full((2, 1, 2, 2), 0.01), torch.ones(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    new_x, new_v = sgld_step(x, v, g, z, step_size=0.1, noise_std=0.02, momentum=0.5)
    assert torch.allclose(new_v, torch.full_like(x, 0.5 * 0.01 - 0.05))
    assert torch.allclose(new_x, torch.full_like(x, 0.5 + 0.005 - 0.05 + 0.02))
    assert float(sgld_step(x, v, -100 * g, z, step_size=1.0, noise_std=0.0, momentum=0.0)[0].max()) == 1.0  # clipped


def test_pgd_step_lengths_and_ball():
    x, grad = torch.full((3, 1, 4, 4), 0.5), torch.randn(3, 1, 4, 4)
    l2 = pgd_step(x, grad, x, step_size=0.1, norm="L2", eps=None)
    assert torch.allclose((l2 - x).flatten(1).norm(dim=1), torch.full((3,), 0.1), atol=1e-6)
    assert (((l2 - x) * grad).sum() < 0)  # downhill
    linf = pgd_step(x, grad, x, step_size=0.05, norm="Linf", eps=None)
    assert torch.allclose((linf - x).abs(), torch.full_like(x, 0.05))
    far = pgd_step(x, grad, x, step_size=1.0, norm="L2", eps=0.2)
    assert float((far - x).flatten(1).norm(dim=1).max()) <= 0.2 + 1e-6
    assert float(far.min()) >= 0 and float(far.max()) <= 1


def test_energy_functions():
    logits, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    assert torch.allclose(energy_function("joint")(logits, y), -logits.gather(1, y[:, None]).squeeze(1))
    assert torch.allclose(energy_function("ce")(logits, y), F.cross_entropy(logits, y, reduction="none"), atol=1e-5)
    mix = energy_function("mix", marginal_weight=0.5)(logits, y)
    assert torch.allclose(mix, -logits.gather(1, y[:, None]).squeeze(1) - 0.5 * torch.logsumexp(logits, 1))
    with pytest.raises(RobustgenError):
        energy_function("nope")


@pytest.mark.parametrize("kind", ["sgld", "pgd"])
def test_energy_decreases_along_a_chain(robust, digits, kind):
    """The chains descend E(x, y): they end below their start, and below where a move of the same length in a random
    direction takes the same start. That control comes from the model under test, so the margin (three standard
    errors of the paired difference) holds for whatever weights this CPU's kernels trained."""
    init = samplers.fit_initializer(InitConfig(kind="pca"), digits, 5)
    x0 = init.draw(32, torch.Generator().manual_seed(0))
    y = torch.full((32,), 5)

    def energy(x):
        with torch.no_grad():
            return -robust(x).gather(1, y[:, None]).squeeze(1)

    config = SamplerConfig(kind=kind, steps=15, noise=0.0, step_size=0.05 if kind == "pgd" else None)
    out = run_chains(robust, x0, y, sampler=config, stop=StopConfig(rule="fixed"), thresholds=torch.full((32,), -np.inf), generator=torch.Generator().manual_seed(0))
    e0, e_end = energy(x0), out["energy_joint"]
    assert torch.allclose(e_end, energy(out["x"]), atol=1e-4)  # the energy reported is the final image's
    # a sign test: more chains end lower than a fair coin would give, by three standard deviations (0.5 + 1.5/sqrt(n))
    assert (e_end < e0).float().mean() > 0.5 + 3 * 0.5 / len(e0) ** 0.5
    length = (out["x"] - x0).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    direction = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    e_random = energy((x0 + length * direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1))
    gain = e_random - e_end  # how much lower the chain ends than the random move of the same length
    assert float(gain.mean()) > 3 * float(gain.std()) / len(gain) ** 0.5, (gain.mean(), gain.std())
    assert out["grad_evals"] == 32 * 15 and torch.all(out["steps"] == 15)
    assert float(out["x"].min()) >= 0 and float(out["x"].max()) <= 1


def test_adaptive_stopping_freezes_chains_and_saves_evaluations(robust, digits):
    x0 = samplers.fit_initializer(InitConfig(kind="uniform"), digits, 2).draw(20, torch.Generator().manual_seed(0))
    y = torch.full((20,), 2)
    thresholds = torch.tensor([np.inf] * 10 + [-np.inf] * 10)  # first half is already "in the band"
    config = SamplerConfig(steps=12)
    out = run_chains(robust, x0, y, sampler=config, stop=StopConfig(rule="adaptive", patience=100), thresholds=thresholds, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["x"][:10], x0[:10]) and torch.all(out["steps"][:10] == 0)  # frozen at once
    assert torch.all(out["steps"][10:] == 12) and not torch.equal(out["x"][10:], x0[10:])
    assert out["grad_evals"] == 10 * 1 + 10 * 12  # stopped chains cost only the evaluation that stopped them
    # patience: a chain that cannot move stops after `patience` steps without improvement
    still = SamplerConfig(steps=50, step_size=0.0, noise=0.0)
    out = run_chains(robust, x0, y, sampler=still, stop=StopConfig(rule="adaptive", patience=4), thresholds=torch.full((20,), -np.inf), generator=torch.Generator())
    assert torch.all(out["steps"] == 4) and out["grad_evals"] == 20 * 5


@pytest.mark.slow
def test_sample_adaptive_saves_evaluations_and_seeds_reproduce(robust, digits):
    kwargs = dict(classes=[1, "7"], progress=False)
    run = RunOptions(n=40, batch_size=16, precision="fp32")
    fixed = samplers.sample(robust, digits, stop=StopConfig(rule="fixed"), sampler=SamplerConfig(steps=20), run=run, **kwargs)
    adaptive = samplers.sample(robust, digits, stop=StopConfig(rule="adaptive"), sampler=SamplerConfig(steps=20), run=run, **kwargs)
    assert fixed.grad_evals == 40 * 20 and adaptive.grad_evals < fixed.grad_evals
    assert adaptive.grad_evals == int((np.minimum(adaptive.steps + 1, 20)).sum())
    assert fixed.images.shape == (40, 8, 8, 1) and fixed.images.dtype == np.uint8
    assert list(np.bincount(fixed.labels, minlength=10)[[1, 7]]) == [20, 20]
    again = samplers.sample(robust, digits, stop=StopConfig(rule="fixed"), sampler=SamplerConfig(steps=20), run=run, **kwargs)
    assert np.array_equal(again.images, fixed.images) and np.array_equal(again.energy_joint, fixed.energy_joint)
    other = samplers.sample(robust, digits, stop=StopConfig(rule="fixed"), sampler=SamplerConfig(steps=20), run=replace(run, seed=1), **kwargs)
    assert not np.array_equal(other.images, fixed.images)


def test_run_dir_contents(robust, digits, tmp_path, robust_digits_checkpoint):
    out = tmp_path / "run"
    result = samplers.sample(robust, digits, classes=[3], run=RunOptions(n=12, batch_size=5, precision="fp32"), out=out, png=True,
                             checkpoint=robust_digits_checkpoint, progress=False)
    with np.load(out / "samples.npz") as z:
        assert z["images"].shape == (12, 8, 8, 1) and z["images"].dtype == np.uint8
        assert np.array_equal(z["labels"], np.full(12, 3)) and np.array_equal(z["steps"], result.steps)
        assert z["energy_joint"].shape == z["energy_marginal"].shape == (12,)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["checkpoint_sha256"] == sha256_file(robust_digits_checkpoint)
    assert meta["seed"] == 0 and meta["grad_evals"] == result.grad_evals and meta["init"]["kind"] == "local-pca"
    assert {"torch", "numpy"} <= set(meta["versions"]) and meta["dataset_sha256"] == digits.fingerprint()
    assert len(list((out / "png" / "3").glob("*.png"))) == 12 and not (out / "shards").exists()
    from PIL import Image

    grid = Image.open(out / "grid.png")
    assert grid.width >= 10 * 32 and grid.height >= 32  # 8x8 digits upscaled to a readable size
    with pytest.raises(RobustgenError, match="already exists"):
        samplers.sample(robust, digits, classes=[3], run=RunOptions(n=12, precision="fp32"), out=out, progress=False)
    assert samplers.sample(robust, digits, classes=[3], run=RunOptions(n=12, batch_size=5, precision="fp32"), out=out, overwrite=True, progress=False).out == out


def test_resume_equals_uninterrupted(robust, digits, tmp_path, monkeypatch):
    run = RunOptions(n=30, batch_size=7, seed=3, precision="fp32")
    kwargs = dict(classes=[0, 4, 9], run=run, progress=False, sampler=SamplerConfig(steps=10))
    straight = samplers.sample(robust, digits, out=tmp_path / "a", **kwargs)

    from samplers import rundir

    real_write, calls = rundir.write_shard, []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C while the third block was being saved
        return real_write(*args, **kw)

    monkeypatch.setattr(rundir, "write_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        samplers.sample(robust, digits, out=tmp_path / "b", **kwargs)
    assert len(list((tmp_path / "b" / "shards").glob("*.npz"))) == 2 and not (tmp_path / "b" / "samples.npz").exists()
    with pytest.raises(RobustgenError, match="options differ"):
        samplers.sample(robust, digits, out=tmp_path / "b", resume=True, **{**kwargs, "run": replace(run, seed=4)})
    calls.clear()
    monkeypatch.setattr(rundir, "write_shard", lambda *a, **kw: (calls.append(1), real_write(*a, **kw))[1])
    resumed = samplers.sample(robust, digits, out=tmp_path / "b", resume=True, **{**kwargs, "run": replace(run, batch_size=7)})
    assert len(calls) == 3  # the 3 blocks of 5 without a shard; the other 2 came from their shards
    for key in ("images", "labels", "energy_joint", "energy_marginal", "steps"):
        assert np.array_equal(getattr(resumed, key), getattr(straight, key)), key
    assert resumed.grad_evals == straight.grad_evals
    with np.load(tmp_path / "b" / "samples.npz") as z:
        assert np.array_equal(z["images"], straight.images)


@pytest.mark.parametrize("stop,precision", [("adaptive", "fp32"), ("fixed", "fp32"), ("adaptive", "bf16")])
def test_refill_and_batch_size_do_not_change_the_images(robust, digits, stop, precision):
    """Continuous batching: each chain draws from its own streams, so refilling freed slots (or any batch
    size) gives bit-identical images, energies and step counts, in fp32 and bf16."""
    kwargs = dict(classes=[2, 5], progress=False, sampler=SamplerConfig(steps=12), stop=StopConfig(rule=stop))
    run = RunOptions(n=23, seed=5, precision=precision)
    refilled = samplers.sample(robust, digits, run=replace(run, batch_size=6, refill=True), **kwargs)
    drained = samplers.sample(robust, digits, run=replace(run, batch_size=6, refill=False), **kwargs)
    one_batch = samplers.sample(robust, digits, run=replace(run, batch_size=23, refill=False), **kwargs)
    for other in (drained, one_batch):
        for key in ("images", "labels", "energy_joint", "energy_marginal", "steps"):
            assert np.array_equal(getattr(refilled, key), getattr(other, key)), key
        assert refilled.grad_evals == other.grad_evals
    if stop == "adaptive":
        assert len(set(refilled.steps.tolist())) > 1  # chains really stopped at different times, so slots were refilled


def test_init_only_control_costs_nothing_and_returns_the_starts(robust, digits):
    run = RunOptions(n=10, seed=2, precision="fp32")
    start = samplers.sample(robust, digits, classes=[4], run=run, progress=False, sampler=SamplerConfig(steps=0))
    moved = samplers.sample(robust, digits, classes=[4], run=run, progress=False, sampler=SamplerConfig(steps=5), stop=StopConfig(rule="fixed"))
    assert start.grad_evals == 0 and np.all(start.steps == 0)
    assert np.array_equal(start.strip_frames[:, 0], moved.strip_frames[:, 0])  # same chains, same starts
    assert not np.array_equal(start.images, moved.images)


def test_sample_rejects_bad_requests(robust, digits, tmp_path):
    with pytest.raises(RobustgenError, match="at least 1"):
        samplers.sample(robust, digits, run=RunOptions(n=0), progress=False)
    with pytest.raises(RobustgenError, match="unknown class"):
        samplers.sample(robust, digits, classes=["cat"], run=RunOptions(n=2), out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()  # nothing written for a refused request


def test_sgld_default_step_is_calibrated_to_the_drift(robust, digits):
    x0 = torch.full((8, 1, 8, 8), 0.5) + 0.05 * torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8)
    config = SamplerConfig(kind="sgld", steps=1, noise=0.0, momentum=0.0, drift=0.004)
    out = run_chains(robust, x0, y, sampler=config, stop=StopConfig(rule="fixed"), thresholds=torch.full((8,), -np.inf), generator=torch.Generator())
    rms = (out["x"] - x0).flatten(1).pow(2).mean(1).sqrt()
    assert torch.allclose(rms, torch.full((8,), 0.004), rtol=1e-3)  # every chain's first step has the same pixel rms


@pytest.mark.slow
def test_compiled_chains_match_eager_ones_to_rounding(robust, digits):
    from robustgen.kernel.device import compile_available

    reason = compile_available(torch.device("cpu"))
    if reason is not None:
        pytest.skip(reason)
    kwargs = dict(classes=[3], progress=False, sampler=SamplerConfig(steps=4), stop=StopConfig(rule="fixed"))
    run = RunOptions(n=8, seed=1, batch_size=8, precision="fp32")
    eager = samplers.sample(robust, digits, run=replace(run, compile="off"), **kwargs)
    compiled = samplers.sample(robust, digits, run=replace(run, compile="on"), **kwargs)
    assert np.abs(eager.images.astype(int) - compiled.images.astype(int)).max() <= 2  # uint8 levels
    assert np.allclose(eager.energy_joint, compiled.energy_joint, atol=1e-3)
