"""Training: each method's step, the loop's run dir, checkpoints, resume, evaluation, CO alarms."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from robustgen.kernel.models.checkpoint import load_checkpoint, load_weights, read_checkpoint
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import read_jsonl
from robustgen.kernel.models import build_model
from training import METHODS, TrainConfig, evaluate_robustness, train
from training.collapse import collapse_epoch
from training.config import resolve_config
from training.diagnostics import co_alarm
from training.rundir import is_finished, read_training_run
from training.schedule import learning_rate
from training.step import train_step

from numerics import BF16_UNIT_ROUNDOFF, rounding_depth

QUICK = dict(dataset="digits", width=4, epochs=2, batch_size=128, eval_pgd_steps=2, eval_subset=60, device="cpu", seed=1)


def _weights(model):
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@pytest.mark.parametrize("method,norm", [(m, "Linf") for m in METHODS] + [(m, "L2") for m in ("fgsm", "fgsm-rs", "n-fgsm", "pgd")])
def test_each_method_takes_a_finite_step_that_changes_the_weights(method, norm):
    torch.manual_seed(0)
    model = build_model("preact-resnet18", num_classes=10, in_channels=1, width=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    config = resolve_config(TrainConfig(method=method, norm=norm, eps=0.1 if norm == "Linf" else 0.5, steps=2 if method in ("pgd", "trades") else None,
                                        der=method != "standard", der_gamma=0.0, out="unused"))
    x, y = torch.rand(32, 1, 8, 8), torch.arange(32) % 10
    before = _weights(model)
    stats = train_step(model, opt, x, y, config=config, epoch=0, precision="fp32")
    assert torch.isfinite(stats["loss"]) and stats["n"] == 32
    assert not torch.allclose(before, _weights(model))
    assert 0 <= stats["aae_high"] <= stats["aae"] <= 32


def _standard_step_update(precision: str, batch_seed: int) -> tuple[float, torch.Tensor, int]:
    """(mean loss, weight update, rounded layers) of one plain SGD step from the seed-0 weights on batch `batch_seed`."""
    torch.manual_seed(0)
    model = build_model("preact-resnet18", num_classes=10, in_channels=1, width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    config = resolve_config(TrainConfig(method="standard", out="unused"))
    x, y = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(batch_seed)), torch.arange(64) % 10
    before = _weights(model)
    stats = train_step(model, opt, x, y, config=config, epoch=0, precision=precision)
    return float(stats["loss"]) / 64, _weights(model) - before, rounding_depth(model)


def test_a_bf16_training_step_stays_within_bf16_rounding_of_fp32():
    """bf16 (what --precision auto picks on AVX512-BF16/AMX CPUs and CUDA) runs on every CPU: natively there, emulated
    elsewhere (slower, same rounding). From the same weights and batch, a plain step's loss (a difference of two
    energies, E(x, y) - E(x), each rounded through every layer) agrees with fp32 to sqrt(2 x depth) bf16 roundings, and
    its update differs from fp32's by less than half as much as an fp32 step on another batch does (SGD's own noise,
    measured here, so no threshold depends on the CPU). (Attack steps are not compared: a sign gradient flips wherever
    bf16 moves a near-zero gradient, so their adversarial images legitimately differ.)"""
    loss_fp32, update_fp32, depth = _standard_step_update("fp32", 1)
    loss_bf16, update_bf16, _ = _standard_step_update("bf16", 1)
    _, update_other_batch, _ = _standard_step_update("fp32", 2)
    assert loss_bf16 == pytest.approx(loss_fp32, rel=(2 * depth) ** 0.5 * BF16_UNIT_ROUNDOFF)
    bf16_error, batch_noise = (update_bf16 - update_fp32).norm(), (update_other_batch - update_fp32).norm()
    assert bf16_error < 0.5 * batch_noise, (float(bf16_error), float(batch_noise))


def test_train_writes_a_complete_run_dir(tmp_path):
    result = train(TrainConfig(**QUICK, method="fgsm", der=True, out=str(tmp_path / "run")), progress=False, log=None)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.jsonl", "best.pt", "last.pt", "curves.png"}
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*"))
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["seed"] == 1 and recorded["config"]["method"] == "fgsm" and recorded["config"]["eps"] == pytest.approx(0.2)  # digits default
    assert len(recorded["dataset"]["sha256"]) == 64 and "torch" in recorded["versions"]
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1]
    for r in records:  # energies in training: every statistic present and finite, counts consistent
        for key in ("train_loss", "train_nat_loss", "train_adv_loss", "train_nat_acc", "train_adv_acc", "de_x_mean", "de_x_std", "de_xy_mean", "de_xy_std",
                    "aae_frac", "aae_high_frac", "test_clean_acc", "test_pgd_acc", "lr", "time_s"):
            assert r[key] == r[key] and abs(r[key]) < 1e6, key
        assert 0 <= r["aae_high_count"] <= r["aae_count"] <= r["n_train"] == 1437
        assert r["de_x_std"] >= 0 and "co_alarm" in r
        assert r["test_pgd_acc"] <= r["test_clean_acc"]
    assert result.metrics == records[-1]
    assert result.best_metrics["test_pgd_acc"] == max(r["test_pgd_acc"] for r in records)
    reread = read_training_run(run)  # the reader the demo, report and experiments use
    assert reread.finished and is_finished(run) and reread.config == result.config and reread.metrics == records
    (run / "metrics.jsonl").write_text(json.dumps(records[0]) + "\n")  # as if killed during the second epoch
    assert not is_finished(run) and not is_finished(tmp_path / "nowhere")


def test_checkpoint_round_trip_and_metadata(robust_digits_checkpoint, digits):
    model, meta = load_checkpoint(robust_digits_checkpoint)
    assert meta["arch"] == "preact-resnet18" and meta["dataset"] == "digits" and meta["classes"] == list(digits.classes)
    assert meta["config"]["der"] is True and meta["input_shape"] == [1, 8, 8] and "metrics" in meta
    payload = read_checkpoint(robust_digits_checkpoint)
    rebuilt = build_model(meta["arch"], **meta["arch_args"])
    load_weights(rebuilt, payload["state_dict"], source="test")
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(rebuilt.eval()(x), model(x))
    wrong = build_model("preact-resnet18", **{**meta["arch_args"], "width": meta["arch_args"]["width"] * 2})
    with pytest.raises(RobustgenError, match="does not fit"):
        load_weights(wrong, payload["state_dict"], source="test")


def test_foreign_and_corrupt_checkpoints_give_one_clear_error(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(3)}, plain)
    with pytest.raises(RobustgenError, match="not a robustgen checkpoint"):
        load_checkpoint(plain)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(RobustgenError, match="cannot read checkpoint"):
        load_checkpoint(junk)


@pytest.mark.slow
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    config = dict(QUICK, epochs=3, method="fgsm-rs", der=True, der_gamma=0.1)
    straight = train(TrainConfig(**config, out=str(tmp_path / "straight")), progress=False, log=None)

    def interrupt(epoch, record):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**config, out=str(tmp_path / "resumed")), progress=False, log=None, on_epoch_end=interrupt)
    resumed = train(resume=tmp_path / "resumed", progress=False, log=None)
    a, b = read_checkpoint(straight.last), read_checkpoint(resumed.last)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    timing = {"time_s", "train_time_s", "images_per_s"}
    strip = lambda recs: [{k: v for k, v in r.items() if k not in timing} for r in recs]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "straight" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "resumed" / "metrics.jsonl"))


def test_existing_run_dir_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    cfg = TrainConfig(**{**QUICK, "epochs": 1}, method="standard", out=str(out))
    with pytest.raises(RobustgenError, match="already holds files"):
        train(cfg, progress=False, log=None)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    train(cfg, overwrite=True, progress=False, log=None)
    assert (out / "notes.txt").read_text() == "keep me" and (out / "best.pt").is_file()


def test_bad_configs_fail_before_anything_is_written(tmp_path):
    for bad in (dict(epochs=0), dict(method="nope"), dict(norm="L3"), dict(dataset="nope"), dict(schedule="cosine"), dict(eps=8.0)):
        out = tmp_path / "x"
        with pytest.raises(RobustgenError):
            train(TrainConfig(**{**QUICK, **bad, "out": str(out)}), progress=False, log=None)
        assert not out.exists()


def test_evaluate_robustness_is_deterministic_and_bounded(robust_digits_checkpoint, digits):
    model, _ = load_checkpoint(robust_digits_checkpoint)
    a = evaluate_robustness(model, digits, eps=0.1, steps=3, restarts=1, subset=100)
    b = evaluate_robustness(model, digits, eps=0.1, steps=3, restarts=1, subset=100)
    assert a == b and a["n"] == 100
    assert 0 <= a["robust_acc"] <= a["clean_acc"] <= 1
    chance = 1 / digits.num_classes  # genuinely robust at its eps: above guessing by three standard errors
    assert a["robust_acc"] > chance + 3 * (chance * (1 - chance) / a["n"]) ** 0.5
    clean_only = evaluate_robustness(model, digits, eps=0.1, steps=0, restarts=1, subset=100)
    assert clean_only["robust_acc"] == clean_only["clean_acc"] == a["clean_acc"]
    stronger = evaluate_robustness(model, digits, eps=0.3, steps=10, restarts=1, subset=100)
    assert stronger["robust_acc"] <= a["robust_acc"]


def test_more_restarts_only_remove_robust_images(robust_digits_checkpoint, digits):
    # Restarts after the first attack only the images still robust; the first restart draws the same start
    # under the same seed, so robust accuracy with 4 restarts can only be at or below that with 1.
    model, _ = load_checkpoint(robust_digits_checkpoint)
    one = evaluate_robustness(model, digits, eps=0.15, steps=3, restarts=1, subset=150)
    four = evaluate_robustness(model, digits, eps=0.15, steps=3, restarts=4, subset=150)
    assert four["clean_acc"] == one["clean_acc"]
    assert four["robust_acc"] <= one["robust_acc"]


class _BrightnessClassifier(torch.nn.Module):
    """Class 0 if an image's mean pixel is above 0.5, else class 1: under Linf eps an image is robust exactly when
    its mean is more than eps from 0.5 (PGD moves every pixel by eps towards the boundary), whatever the CPU."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(50.0))

    def forward(self, x):
        margin = self.scale * (x.flatten(1).mean(1) - 0.5)
        return torch.stack([margin, -margin], dim=1)


def test_restarts_keep_exactly_the_images_no_attack_can_flip():
    """Pruning restarts (each attacks only the images still robust) must neither zero nor inflate the count: on a
    model whose robust images are known in closed form, every number of restarts finds exactly them."""
    from robustgen.kernel.data import ImageDataset

    levels = np.array([60, 80, 100, 115, 120, 135, 140, 150, 170, 190, 200], dtype=np.uint8)  # uniform grey images, none on an edge
    x = np.repeat(levels, 8 * 8).reshape(-1, 8, 8, 1)
    y = (levels / 255 <= 0.5).astype(np.int64)  # every image classified correctly when clean
    data = ImageDataset("grey", x, y, x, y, ("bright", "dark"), crop_padding=0, flip=False)
    eps = 0.1
    robust = np.abs(levels / 255 - 0.5) > eps
    assert 0 < robust.sum() < len(levels)
    for restarts in (1, 2, 4):
        result = evaluate_robustness(_BrightnessClassifier(), data, eps=eps, steps=5, restarts=restarts)
        assert result["clean_acc"] == 1.0 and result["robust_acc"] == robust.mean(), restarts


def test_robust_fixture_beats_standard_fixture_under_attack(robust_digits_checkpoint, standard_digits_checkpoint, digits):
    """On all 360 test images, by more than three standard errors of the difference of the two accuracies."""
    robust = evaluate_robustness(load_checkpoint(robust_digits_checkpoint)[0], digits, eps=0.1, steps=5, restarts=1)
    standard = evaluate_robustness(load_checkpoint(standard_digits_checkpoint)[0], digits, eps=0.1, steps=5, restarts=1)
    p, q, n = robust["robust_acc"], standard["robust_acc"], robust["n"]
    assert p - q > 3 * ((p * (1 - p) + q * (1 - q)) / n) ** 0.5, (p, q)


def _rec(epoch, pgd, adv, de):
    return {"epoch": epoch, "test_pgd_acc": pgd, "train_adv_acc": adv, "de_norm_mean": de, "eval_pgd_steps": 10}


def test_co_alarm_fires_on_collapse_or_energy_spike_only():
    history = [_rec(0, 0.30, 0.35, 1.0), _rec(1, 0.35, 0.40, 1.1), _rec(2, 0.36, 0.42, 1.0)]
    assert co_alarm(_rec(3, 0.37, 0.44, 1.2), history) is None
    assert "collapsed" in co_alarm(_rec(3, 0.05, 0.80, 1.2), history)
    assert "spiked" in co_alarm(_rec(3, 0.37, 0.44, 5.0), history)
    assert co_alarm(_rec(0, 0.0, 0.1, 9.0), []) is None


def test_collapse_label_of_the_experiments_is_the_rule_the_alarm_fires_on():
    """collapse_epoch (what the experiments score alarms against) marks the epoch co_alarm reports a collapse at,
    on random accuracy curves whose train adversarial accuracy keeps rising."""
    rng = random.Random(0)
    for _ in range(200):
        records = [_rec(e, rng.choice([0.0, 0.04, 0.08, 0.12, 0.2, 0.3, 0.4]), 0.1 * e, 1.0) for e in range(8)]
        alarms = [e for e in range(8) if "collapsed" in (co_alarm(records[e], records[:e]) or "")]
        assert collapse_epoch(records) == (alarms[0] if alarms else None)


def test_schedules():
    assert learning_rate(0, schedule="cyclic", lr=0.2, epochs=10) == 0
    assert learning_rate(4, schedule="cyclic", lr=0.2, epochs=10) == pytest.approx(0.2)
    assert learning_rate(10, schedule="cyclic", lr=0.2, epochs=10) == pytest.approx(0)
    assert [learning_rate(t, schedule="piecewise", lr=0.1, epochs=10) for t in (1, 6, 9)] == pytest.approx([0.1, 0.01, 0.001])


def _check(step, pgd, fgsm, aae=0.05, de=0.2):
    return {"epoch": 0, "step": step, "pgd_acc": pgd, "fgsm_acc": fgsm, "aae_rate": aae, "de_norm_mean": de, "train_adv_acc": 0.3}


def test_in_epoch_alarm_needs_a_smoothed_collapse_with_masked_fgsm_or_an_aae_surge():
    from training.monitor import replay_alarms

    healthy = [_check(10 * i, 0.30 + 0.01 * (i % 2), 0.32) for i in range(6)]
    assert replay_alarms(healthy) == [None] * 6
    one_noisy_dip = healthy + [_check(60, 0.12, 0.33), _check(70, 0.30, 0.32)]
    assert replay_alarms(one_noisy_dip)[-2:] == [None, None]  # averaged with its neighbour, one dip is not a collapse
    collapse = healthy + [_check(60, 0.05, 0.50), _check(70, 0.02, 0.60)]
    assert replay_alarms(collapse)[-2] is None and "collapsed" in replay_alarms(collapse)[-1]
    robust_drop = healthy + [_check(60, 0.05, 0.06), _check(70, 0.02, 0.03)]  # FGSM falls too: not masking, no CO alarm
    assert replay_alarms(robust_drop)[-1] is None
    one_window = healthy + [_check(60, 0.24, 0.32, aae=0.30, de=0.9)]  # one window of many AAEs: averaged, not yet
    assert replay_alarms(one_window)[-1] is None
    surge = one_window + [_check(70, 0.24, 0.32, aae=0.35, de=0.9)]  # many AAEs while PGD accuracy starts to fall
    assert "AAE surge" in replay_alarms(surge)[-1]
    steady = healthy + [_check(60, 0.30, 0.32, aae=0.30), _check(70, 0.31, 0.32, aae=0.35)]  # many AAEs, PGD intact
    assert replay_alarms(steady)[-1] is None
    climb = [_check(10 * i, 0.60, 0.62, aae=0.08 + 0.01 * i) for i in range(16)]  # 8% -> 23%: a slow climb, no collapse
    assert replay_alarms(climb) == [None] * 16


@pytest.mark.parametrize("action", ["der", "rollback", "stop"])
def test_co_alarm_actions_roll_back_switch_der_on_or_stop_and_are_recorded(tmp_path, monkeypatch, action):
    import training.monitor as monitor

    fired = []

    def alarm_at_second_check(history, current):
        if len(history) == 1 and not fired:
            fired.append(1)
            return "test alarm"
        return None

    monkeypatch.setattr(monitor, "alarm_reason", alarm_at_second_check)
    config = TrainConfig(**{**QUICK, "epochs": 2}, method="fgsm", co_check_every=3, on_co=action, out=str(tmp_path / "run"))
    result = train(config, progress=False, log=None)
    checks = read_jsonl(tmp_path / "run" / "monitor.jsonl")
    alarmed = [c for c in checks if c.get("alarm")]
    assert len(alarmed) == 1 and alarmed[0]["step"] == 6 and alarmed[0]["action"] == action
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    if action == "stop":
        assert result.stopped and "stopped by --on-co stop at step 6" in result.stopped and len(records) == 1
        assert is_finished(tmp_path / "run")  # stopped on purpose: done, not to be resumed
        with pytest.raises(RobustgenError, match="already finished"):
            train(resume=tmp_path / "run", progress=False, log=None)
        return
    assert records[0]["interventions"][0]["rolled_back_to_step"] == 3 and len(records) == 2
    assert records[-1]["der_active"] is (action == "der")  # `der` switched DER on for the rest of the run
    assert records[-1]["der_beta"] == config.der_beta


def _first_step_loss(compiled: bool, precision: str) -> float:
    from robustgen.kernel.device import maybe_compile

    torch.manual_seed(0)
    # width 8, not 4: inductor lays convolutions out channels_last, and torch 2.14's oneDNN backward of the width-4 net's
    # 1x1 stride-2 shortcut (4 -> 8 channels on 8x8 maps) corrupts the heap on AVX2-only CPUs (an AMD EPYC: abort)
    net = build_model("preact-resnet18", num_classes=10, in_channels=1, width=8)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    config = resolve_config(TrainConfig(method="fgsm-rs", eps=0.1, der=True, out="unused"))
    x, y = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(64) % 10
    torch.manual_seed(2)  # the attack's random start
    stats = train_step(maybe_compile(net, compiled), opt, x, y, config=config, epoch=0, precision=precision)
    return float(stats["loss"]) / 64


BF16_DEPTH = rounding_depth(build_model("preact-resnet18", num_classes=10, in_channels=1, width=8))


@pytest.mark.slow
def test_compiled_first_step_loss_matches_eager():
    import subprocess
    import sys

    from robustgen.kernel.device import compile_available, fast_bf16

    reason = compile_available(torch.device("cpu"))
    if reason is not None:
        pytest.skip(reason)
    precision = "bf16" if fast_bf16(torch.device("cpu")) else "fp32"
    # In a child process: a crash inside torch's compiled kernels (a torch/oneDNN bug on some CPUs) must not abort the suite.
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from test_training import _first_step_loss as f; print(f(False, {precision!r}), f(True, {precision!r}))"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if child.returncode < 0:
        pytest.skip(f"torch.compile crashed with signal {-child.returncode} on this CPU (a torch bug, not robustgen's): {child.stderr[-300:]}")
    assert child.returncode == 0, child.stderr[-2000:]
    eager, compiled = map(float, child.stdout.split()[-2:])
    # bf16: compiled and eager kernels round in different orders, each within sqrt(2 x depth) bf16 roundings of the loss
    assert compiled == pytest.approx(eager, rel=(2 * BF16_DEPTH) ** 0.5 * BF16_UNIT_ROUNDOFF if precision == "bf16" else 1e-4)


def test_compile_without_a_cxx_compiler_falls_back_with_one_line(monkeypatch):
    import shutil

    from robustgen.kernel.device import resolve_compile

    monkeypatch.setattr(shutil, "which", lambda name: None)
    enabled, warning = resolve_compile("on", torch.device("cpu"), long_run=False)
    assert not enabled and "no C++ compiler" in warning and "\n" not in warning
    assert resolve_compile("auto", torch.device("cpu"), long_run=True) == (False, None)  # auto falls back silently
    assert resolve_compile("off", torch.device("cpu"), long_run=True) == (False, None)
