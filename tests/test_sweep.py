"""`robustgen sweep` through click's CliRunner: one run dir per value, controls, gains over init, frontier, resume."""

from __future__ import annotations

import json

import pytest

from clicheck import assert_one_line_error
from click.testing import CliRunner

from robustgen.cli import main
from samplers.sweep import knob_configs
from samplers.config import InitConfig, SamplerConfig, StopConfig
from robustgen.kernel.errors import RobustgenError


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.slow
def test_sweep_writes_points_controls_and_frontier_and_resumes(tmp_path, robust_digits_checkpoint, standard_digits_checkpoint):
    out = tmp_path / "sweep"
    args = ["sweep", "--checkpoint", robust_digits_checkpoint, "--features", standard_digits_checkpoint, "--knob", "scale",
            "--values", "1,2", "--k", 30, "--class", 3, "--class", 5, "-n", 40, "--device", "cpu", "--out", out, "--json"]
    result = _run(*args)
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    controls = {"scale=1": "init-only:local-pca,k=30,scale=1.0", "scale=2": "init-only:local-pca,k=30"}  # the scale is part of the start
    assert set(controls) | set(controls.values()) | {"santurkar", "real-test", "real-train"} == set(rows)
    for point, control in controls.items():  # every point is a finished run dir, scored against both splits, with its gains over init
        row = rows[point]
        assert (out / point / "samples.npz").is_file() and (out / point / "score.json").is_file()
        assert row["init_only"] == control and 0 <= row["recall_test"] <= 1 and row["fid_test"] >= 0
        assert row["gain_fid_test"] == pytest.approx(row["fid_test"] - rows[control]["fid_test"])
        assert 0 <= row["near_copy_fraction_pixel"] <= 1 and row["nn_ratio_pixel"] > 0
        assert rows[control]["grad_evals_per_image"] == 0
    assert rows["santurkar"]["grad_evals_per_image"] == 60
    assert rows["real-test"]["nn_ratio_pixel"] == pytest.approx(1.0)
    assert json.loads((out / "sweep.json").read_text())["knob"] == "scale" and (out / "frontier.png").stat().st_size > 10_000
    stamp = (out / "scale=1" / "samples.npz").stat().st_mtime_ns
    again = _run(*args)  # a rerun resumes: nothing is sampled again
    assert again.exit_code == 0 and (out / "scale=1" / "samples.npz").stat().st_mtime_ns == stamp


def test_sweep_refuses_unknown_knobs_and_bad_values_before_running(tmp_path, robust_digits_checkpoint, standard_digits_checkpoint):
    for knob, values, fragment in (("nope", "1", "unknown knob"), ("quantile", "2", "--quantile 2.0 must be in [0, 1]"), ("k", "x", "not a valid int")):
        result = _run("sweep", "--checkpoint", robust_digits_checkpoint, "--features", standard_digits_checkpoint, "--knob", knob,
                      "--values", values, "--out", tmp_path / "s")
        assert_one_line_error(result, fragment)
        assert not (tmp_path / "s").exists()


def test_knob_values_are_typed_by_their_config_field():
    base = (InitConfig(), SamplerConfig(), StopConfig())
    configs = knob_configs(base, "components", ["5", "none"])
    assert configs["components=5"][0].components == 5 and configs["components=none"][0].components is None
    assert knob_configs(base, "init", ["gaussian"])["init=gaussian"][0].kind == "gaussian"
    assert knob_configs(base, "step_size", ["0.5"])["step_size=0.5"][1].step_size == 0.5
    with pytest.raises(RobustgenError, match="cannot be none"):
        knob_configs(base, "k", ["none"])
