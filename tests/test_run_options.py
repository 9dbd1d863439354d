"""One home for how sampling runs (samplers.config.RunOptions): a default changed there changes every door."""

from __future__ import annotations

import dataclasses
import json

import pytest
from clicheck import invoke

from samplers.config import InitConfig, RunOptions, SamplerConfig, StopConfig


@pytest.fixture
def changed_defaults(monkeypatch, tmp_path):
    """RunOptions' defaults changed in their one place: 12 images, batches of 5, bf16 (bf16 runs on every CPU, natively or emulated)."""
    monkeypatch.setenv("ROBUSTGEN_CACHE", str(tmp_path / "cache"))
    names = [f.name for f in dataclasses.fields(RunOptions)]
    defaults = dict(zip(names, RunOptions.__init__.__defaults__))
    changed = {**defaults, "n": 12, "batch_size": 5, "precision": "bf16", "device": "cpu"}
    monkeypatch.setattr(RunOptions.__init__, "__defaults__", tuple(changed[name] for name in names))
    assert RunOptions().n == 12  # the patch took
    return changed


def _recorded(run_dir) -> tuple:
    meta = json.loads((run_dir / "meta.json").read_text())
    return meta["n"], meta["batch_size"], meta["precision"]


def test_every_door_follows_the_run_defaults(changed_defaults, robust_digits_checkpoint, standard_digits_checkpoint, tmp_path):
    from samplers import sample_from_checkpoint
    from samplers.compare import compare

    expected = (12, 5, "bf16")
    cli = invoke(["sample", "--checkpoint", robust_digits_checkpoint, "--steps", 1, "--out", tmp_path / "cli", "--no-calibration"])
    assert cli.exit_code == 0, cli.stderr
    assert _recorded(tmp_path / "cli") == expected
    sample_from_checkpoint(robust_digits_checkpoint, sampler=SamplerConfig(steps=1), calibration=False, out=tmp_path / "api", progress=False)
    assert _recorded(tmp_path / "api") == expected
    rows = compare(robust_digits_checkpoint, {"one step": (InitConfig(), SamplerConfig(steps=1), StopConfig())}, out=tmp_path / "cmp", controls=False,
                   features=standard_digits_checkpoint, judge=standard_digits_checkpoint, log=lambda _: None)
    assert _recorded(rows[0].run) == expected


def test_the_demo_follows_the_run_defaults(changed_defaults, tmp_path):
    from robustgen.app.demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=str(tmp_path / "demo"), robust_epochs=1, reference_epochs=1), log=lambda _: None)
    assert _recorded(tmp_path / "demo" / "samples" / "default") == (12, 5, "bf16")
