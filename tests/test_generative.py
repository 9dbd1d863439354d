"""Generative fine-tuning (DAT, DESIGN.md section 3): the objective, the OOD ascent, the T rule, runs, resume, the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from clicheck import assert_one_line_error, invoke
from PIL import Image

from robustgen.kernel.models.checkpoint import load_checkpoint, read_checkpoint
from robustgen.cli import main
from robustgen.kernel.data.pool import read_image_pool
from robustgen.kernel.energy import marginal_energy
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import read_jsonl
from robustgen.kernel.models import build_model
from training import TrainConfig, train
from training.config import resolve_config
from training.finetune import finetune_config, holdout_split
from training.generative import ascend_energy_logit, ascent_step_size, auc, energy_logit, frechet_distance, generative_loss, next_steps
from training.presets import PRESETS, preset_config

BASE = dict(dataset="digits", width=4, batch_size=64, eval_pgd_steps=2, eval_subset=60, device="cpu", seed=1, method="pgd", norm="L2",
            eps=0.5, steps=2)
FINE = dict(generative=True, epochs=2, holdout=40, gen_auc_window=128, gen_steps=2, gen_steps_increment=2, gen_steps_max=6)
TIMING = {"time_s", "train_time_s", "images_per_s"}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A tiny L2-PGD digits model (2 epochs, width 4): the robust start of the fine-tuning tests."""
    out = tmp_path_factory.mktemp("gen-base") / "run"
    return train(TrainConfig(**BASE, epochs=2, out=str(out)), progress=False, log=None).best


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory):
    """A flat folder of 12x12 images, no class subfolders: mostly RGB PNGs, some grayscale, some JPEGs."""
    folder = tmp_path_factory.mktemp("ood-flat")
    rng = np.random.default_rng(0)
    for i in range(160):
        pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert("L") if i % 10 == 0 else Image.fromarray(pixels)
        image.save(folder / (f"{i:03d}.jpg" if i % 7 == 0 else f"{i:03d}.png"))
    return folder


def _model(in_channels=1):
    torch.manual_seed(0)
    return build_model("preact-resnet18", num_classes=10, in_channels=in_channels, width=4, mean=[0.5] * in_channels, std=[0.25] * in_channels)


# --------------------------------------------------------------------------- the objective


def test_energy_logit_is_logsumexp_and_the_loss_is_the_two_bce_terms():
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(0)) * 3
    s = energy_logit(logits)
    assert torch.allclose(s, torch.logsumexp(logits, 1)) and torch.allclose(s, -marginal_energy(logits))
    s_real, s_ood = s[:32], s[32:]
    by_hand = -F.logsigmoid(s_real).mean() - F.logsigmoid(-s_ood).mean()  # -log sigma(s) - log(1 - sigma(s'))
    assert torch.allclose(generative_loss(s_real, s_ood), by_hand, atol=1e-5)


def test_the_loss_falls_as_real_energy_falls_and_contrast_energy_rises():
    s_real, s_ood = torch.zeros(8), torch.zeros(8)
    base = generative_loss(s_real, s_ood)
    assert torch.isclose(base, torch.tensor(2 * np.log(2), dtype=base.dtype))  # undecided: log 2 per term
    assert generative_loss(s_real + 1, s_ood) < base and generative_loss(s_real, s_ood - 1) < base
    assert generative_loss(s_real - 1, s_ood) > base and generative_loss(s_real, s_ood + 1) > base
    s_real.requires_grad_(True)
    s_ood.requires_grad_(True)
    generative_loss(s_real, s_ood).backward()
    assert (s_real.grad < 0).all() and (s_ood.grad > 0).all()  # descent raises s(real), lowers s(contrast)


def test_ood_ascent_raises_s_stays_in_pixel_space_and_restores_the_mode():
    model = _model().train()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    x_t, s_start = ascend_energy_logit(model, x, steps=5, step_size=0.05)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(s_start, energy_logit(model(x)), atol=1e-5)
        s_end = energy_logit(model(x_t))
    assert (s_end > s_start).float().mean() >= 0.9 and s_end.mean() > s_start.mean()
    assert x_t.min() >= 0 and x_t.max() <= 1
    model.train()
    ascend_energy_logit(model, x, steps=1, step_size=0.05)
    assert model.training  # eval mode only for the ascent
    per_step = (ascend_energy_logit(model, x, steps=1, step_size=0.05)[0] - x).flatten(1).norm(dim=1)
    assert (per_step <= 0.05 + 1e-5).all()  # an L2-normalised step (clipping only shortens it)
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    unchanged, _ = ascend_energy_logit(model, x, steps=0, step_size=0.05)
    assert torch.equal(unchanged, x) and all(torch.equal(model.state_dict()[k], v) for k, v in buffers.items())


def test_ascent_step_scales_with_image_size():
    assert ascent_step_size(None, 3072) == pytest.approx(0.2)
    assert ascent_step_size(None, 64) == pytest.approx(0.2 * (64 / 3072) ** 0.5)
    assert ascent_step_size(0.7, 64) == 0.7


def test_auc_matches_its_definition():
    rng = np.random.default_rng(0)
    pos, neg = torch.tensor(rng.normal(1, 1, 300)), torch.tensor(rng.normal(0, 1, 200))
    by_pairs = ((pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()).mean()
    assert auc(pos, neg) == pytest.approx(float(by_pairs))
    assert auc(torch.ones(5) * 2, torch.ones(5)) == 1.0 and auc(torch.ones(5), torch.ones(5) * 2) == 0.0
    assert auc(torch.ones(5), torch.ones(7)) == 0.5


def test_t_rises_only_when_the_auc_passes_the_threshold_and_never_above_the_maximum():
    rule = dict(threshold=0.7, increment=5, maximum=12)
    assert next_steps(5, 0.69, **rule) == 5 and next_steps(5, 0.7, **rule) == 5
    assert next_steps(5, 0.71, **rule) == 10 and next_steps(10, 0.9, **rule) == 12 and next_steps(12, 0.99, **rule) == 12
    ramp = dict(rule, threshold=0.0)  # threshold 0: after every window, even one the contrast won outright
    assert next_steps(5, 0.0, **ramp) == 10 and next_steps(10, 0.2, **ramp) == 12 and next_steps(12, 0.0, **ramp) == 12


def test_frechet_distance_is_zero_on_identical_sets_and_grows_with_a_shift():
    a = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 1) == pytest.approx(6.0, rel=1e-6)  # |mu shift|^2, equal covariances


def test_a_generative_step_freezes_batchnorm_adds_the_bce_and_keeps_der_usable():
    from training.step import train_step

    model = _model().train()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.arange(16) % 10
    contrast = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    config = resolve_config(TrainConfig(**{**BASE, "der": True, "generative": True, "ood": "digits", "init_from": "x.pt"}))
    torch.manual_seed(0)
    stats = train_step(model, optimizer, x, y, config=config, epoch=0, precision="fp32", contrast=contrast)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in buffers.items())  # eval-mode BatchNorm: running stats untouched
    assert float(stats["n_ood"]) == 16 and float(stats["gen_loss"]) > 0 and float(stats["der_penalty"]) >= 0
    s_real, s_ood = stats["s_real_values"], stats["s_ood_values"]
    expected = float(generative_loss(s_real, s_ood)) * config.gen_weight + config.der_beta * float(stats["der_penalty"]) / 16
    assert float(stats["loss"]) / 16 == pytest.approx(float(stats["adv_loss"]) / 16 + expected, rel=1e-4)  # CE + BCE + DER
    plain = train_step(model, optimizer, x, y, config=config, epoch=0, precision="fp32")
    assert float(plain["n_ood"]) == 0 and "s_real_values" not in plain


# --------------------------------------------------------------------------- OOD images


def test_a_flat_folder_of_images_is_an_ood_source(flat_folder):
    gray = read_image_pool(f"folder:{flat_folder}", shape=(1, 8, 8)).images
    rgb = read_image_pool(f"folder:{flat_folder}", shape=(3, 32, 32)).images
    assert gray.shape == (160, 8, 8, 1) and rgb.shape == (160, 32, 32, 3) and gray.dtype == np.uint8
    with pytest.raises(RobustgenError, match="drop --no-ood-resize"):
        read_image_pool(f"folder:{flat_folder}", shape=(1, 8, 8), resize=False, resize_hint="drop --no-ood-resize")
    assert read_image_pool("digits", shape=(3, 16, 16), limit=100).images.shape == (100, 16, 16, 3)


# --------------------------------------------------------------------------- configs


def test_generative_configs_are_refused_with_one_line():
    cases = [
        (dict(generative=True, ood="digits"), "--init-from"),
        (dict(generative=True, init_from="x.pt"), "--ood"),
        (dict(ood="digits"), "add --generative"),
        (dict(generative=True, ood="digits", init_from="x.pt", gen_steps=0), "at least 1"),
        (dict(generative=True, ood="digits", init_from="x.pt", gen_steps=-3), "at least 1"),
        (dict(generative=True, ood="digits", init_from="x.pt", gen_steps_max=2, gen_steps=5), "--gen-steps-max"),
        (dict(generative=True, ood="digits", init_from="x.pt", gen_auc_threshold=1.0), "[0, 1)"),
        (dict(generative=True, ood="digits", init_from="x.pt", gen_auc_threshold=-0.1), "or 0 for a plain ramp"),
        (dict(generative=True, ood="digits", init_from="x.pt", ema_decay=1.0), "--ema-decay"),
        (dict(generative=True, ood="digits", init_from="x.pt", on_co="rollback"), "--on-co warn"),
    ]
    for fields, message in cases:
        with pytest.raises(RobustgenError, match=re.escape(message)) as info:
            resolve_config(TrainConfig(**fields))
        assert "\n" not in str(info.value)
    assert resolve_config(TrainConfig(generative=True, ood="digits", init_from="x.pt")).epochs == 5


def test_the_preset_with_ood_trains_then_fine_tunes_and_without_ood_is_unchanged():
    plain = preset_config("generation", {"dataset": "digits"})
    assert plain == TrainConfig(**PRESETS["generation"].fields, dataset="digits", preset="generation") and not plain.generative
    tuned = preset_config("generation", {"dataset": "digits", "ood": "folder:x"})
    base = PRESETS["generation"].fields["epochs"]
    assert tuned.generative and tuned.gen_start == base and tuned.epochs == base + PRESETS["generation"].generative_epochs
    assert preset_config("generation", {"dataset": "digits", "ood": "folder:x", "epochs": 3}).gen_start == 3


def test_holdout_is_fixed_disjoint_and_complete():
    config = TrainConfig(holdout=50, seed=3)
    train_idx, held = holdout_split(500, config)
    assert len(held) == 50 and not set(train_idx) & set(held) and len(train_idx) + len(held) == 500
    assert np.array_equal(held, holdout_split(500, config)[1])
    with pytest.raises(RobustgenError, match="--holdout"):
        holdout_split(80, config)


# --------------------------------------------------------------------------- runs


@pytest.mark.slow
def test_a_fine_tuning_run_follows_the_t_rule_keeps_ema_and_resumes_bit_exactly(base_run, flat_folder, tmp_path):
    config = finetune_config(str(base_run), dict(dataset="digits", ood=f"folder:{flat_folder}", device="cpu", seed=1, **FINE))
    assert (config.method, config.norm, config.eps, config.width) == ("pgd", "L2", 0.5, 4)  # inherited from the start
    straight = train(TrainConfig(**{**config.to_dict(), "out": str(tmp_path / "straight")}), progress=False, log=None)

    def interrupt(epoch, record):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**{**config.to_dict(), "out": str(tmp_path / "resumed")}), progress=False, log=None, on_epoch_end=interrupt)
    resumed = train(resume=tmp_path / "resumed", progress=False, log=None)
    for name in ("last", "best"):
        a, b = read_checkpoint(getattr(straight, name)), read_checkpoint(getattr(resumed, name))
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    records = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    strip = lambda recs: [{k: v for k, v in r.items() if k not in TIMING} for r in recs]  # noqa: E731
    assert strip(records) == strip(read_jsonl(tmp_path / "resumed" / "metrics.jsonl"))

    steps = [records[0]["gen_steps_start"]]
    for record in records:
        assert record["generative"] and 0 <= record["gen_auc"] <= 1 and record["n_train"] == 1437 - FINE["holdout"]
        assert record["heldout_frechet"] >= 0 and np.isfinite(record["energy_real_mean"]) and np.isfinite(record["energy_ood_mean"])
        for window in record["gen_auc_windows"]:
            assert window["steps"] == steps[-1]  # T changes only between windows ...
            steps.append(next_steps(window["steps"], window["auc"], threshold=config.gen_auc_threshold,
                                    increment=config.gen_steps_increment, maximum=config.gen_steps_max))  # ... and only by the rule
        assert record["gen_steps"] == steps[-1]
    best = read_checkpoint(straight.best)
    last = read_checkpoint(straight.last)
    assert best["meta"]["weights"] == "ema" and best["meta"]["epoch"] == min(records, key=lambda r: r["heldout_frechet"])["epoch"]
    ema = last["extra"]["generative"]["ema"]
    assert all(torch.equal(best["state_dict"][k], ema[k]) for k in ema) or best["meta"]["epoch"] != records[-1]["epoch"]
    assert any(not torch.equal(ema[k], last["state_dict"][k]) for k in ema)  # EMA weights are not the raw weights


# --------------------------------------------------------------------------- the CLI


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_cli_refuses_bad_generative_input_with_one_line(base_run, flat_folder, tmp_path):
    ood = f"folder:{flat_folder}"
    cases = [
        (["train", "digits", "--generative", "--ood", ood], "--init-from"),
        (["train", "digits", "--init-from", str(base_run), "--generative"], "--ood"),
        (["train", "digits", "--init-from", str(base_run), "--generative", "--ood", ood, "--gen-steps", "0"], "at least 1"),
        (["train", "digits", "--init-from", str(base_run), "--ood", ood], "add --generative"),
        (["train", "digits", "--init-from", str(base_run), "--generative", "--ood", ood, "--no-ood-resize"], "drop --no-ood-resize"),
        (["train", "digits", "--init-from", str(tmp_path / "none.pt"), "--generative", "--ood", ood], "--init-from"),
        (["train", "npz:" + str(tmp_path / "no.npz"), "--preset", "generation", "--ood", ood], "no.npz"),
    ]
    for args, message in cases:
        out = tmp_path / "out"
        result = invoke([*args, "--out", str(out), "--device", "cpu"])
        assert_one_line_error(result, message)
        assert not out.exists()  # refused before the run dir is touched


@pytest.mark.slow
def test_cli_preset_with_a_flat_ood_folder_trains_then_fine_tunes_in_one_run(flat_folder, tmp_path):
    out = tmp_path / "run"
    result = _run(["train", "digits", "--preset", "generation", "--ood", f"folder:{flat_folder}", "--epochs", "1", "--width", "4",
                   "--steps", "2", "--holdout", "40", "--eval-pgd-steps", "1", "--eval-subset", "40", "--device", "cpu", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["best_heldout_frechet"] >= 0 and summary["last_gen_steps"] >= 1
    assert summary["config"]["gen_start"] == 1 and summary["config"]["epochs"] == 1 + PRESETS["generation"].generative_epochs
    records = read_jsonl(out / "metrics.jsonl")
    assert [bool(r.get("generative")) for r in records] == [False] + [True] * PRESETS["generation"].generative_epochs
    ramp = PRESETS["generation"].generative  # one window an epoch, T up by the increment after each, whatever the AUC
    expected = [min(ramp["gen_steps"] + i * ramp["gen_steps_increment"], ramp["gen_steps_max"]) for i in range(len(records) - 1)]
    assert [r["gen_steps_start"] for r in records[1:]] == expected and all(len(r["gen_auc_windows"]) == 1 for r in records[1:])
    model, meta = load_checkpoint(out / "best.pt")
    assert meta["weights"] == "ema" and meta["epoch"] >= 1  # best.pt is a fine-tuned model
    assert (out / "curves.png").is_file()
    diagnosed = _run(["diagnose", str(out), "--device", "cpu", "-n", "8"])
    assert diagnosed.exit_code == 0, diagnosed.output
    from robustgen.app.report import render_report

    page = render_report(out)
    assert "real-vs-contrastive AUC" in page and "held-out Frechet distance" in page


@pytest.mark.slow
def test_fine_tuning_under_torchrun_counts_every_image_and_agrees_on_t(base_run, flat_folder, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    args = ["train", "digits", "--init-from", base_run, "--generative", "--ood", f"folder:{flat_folder}", "--epochs", "1", "--holdout", "40",
            "--gen-auc-window", "128", "--gen-steps", "2", "--gen-steps-increment", "2", "--gen-steps-max", "6", "--eval-subset", "40",
            "--device", "cpu", "--out", out]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "robustgen"]
    done = subprocess.run(launcher + [str(a) for a in args], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = read_jsonl(out / "metrics.jsonl")
    assert record["n_train"] == 1437 - 40  # every training image but the held-out ones, counted once across the ranks
    windows = record["gen_auc_windows"]
    assert windows and sum(w["images"] for w in windows) <= record["n_train"] and all(0 <= w["auc"] <= 1 for w in windows)
    for before, after in zip(windows, windows[1:]):  # both ranks applied the rule to the same (averaged) AUC
        assert after["steps"] == next_steps(before["steps"], before["auc"], threshold=0.7, increment=2, maximum=6)
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert read_checkpoint(out / "best.pt")["meta"]["weights"] == "ema"
