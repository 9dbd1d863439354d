"""`robustgen score` through click's CliRunner: tables, --json, score.json, and one-line errors."""

from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
from click.testing import CliRunner
from clicheck import assert_one_line_error

from robustgen.cli import main
from test_scoring import pixel_checkpoint, to_images, write_ref


@pytest.fixture()
def setup(tmp_path):
    rng = np.random.default_rng(0)
    k = 10
    ref = write_ref(tmp_path / "ref.npz", to_images(100 + 20 * rng.normal(size=(300, k))), np.arange(300) % k)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    n = 200
    np.savez(run_dir / "samples.npz", images=to_images(110 + 25 * rng.normal(size=(n, k))), labels=np.arange(n) % k,
             energy_joint=np.zeros(n, np.float32), energy_marginal=np.zeros(n, np.float32), steps=np.ones(n, np.int64))
    (run_dir / "meta.json").write_text(json.dumps({"dataset": ref, "checkpoint": None}))
    ckpt = pixel_checkpoint(tmp_path / "pixels.pt", k)
    return {"ref": ref, "run": run_dir, "ckpt": ckpt, "cache": tmp_path / "cache", "tmp": tmp_path}


def invoke(*args: str):
    return CliRunner().invoke(main, ["score", *map(str, args)])


def test_score_run_dir_prints_table_and_writes_score_json(setup):
    result = invoke(setup["run"], "--features", setup["ckpt"], "--metrics", "is,fid,kid,prc", "--cache-dir", setup["cache"])
    assert result.exit_code == 0, result.output
    assert "not comparable with Inception-based numbers in papers" in result.output
    for word in ("IS", "FID", "KID (subset 200)", "precision", "recall", "Per class", "KID subset size lowered"):
        assert word in result.output
    saved = json.loads((setup["run"] / "score.json").read_text())
    assert saved["reference"]["dataset"] == setup["ref"]  # taken from meta.json
    assert saved["extractor"]["kind"] == "classifier" and saved["comparable_with_papers"] is False
    assert set(saved["metrics"]) >= {"is_mean", "fid", "kid_mean", "precision", "recall"}
    assert len(saved["per_class"]) == 10


def test_score_json_output_and_out_path(setup):
    out = setup["tmp"] / "elsewhere.json"
    result = invoke(setup["run"], "--features", setup["ckpt"], "--json", "--no-per-class", "--out", out, "--cache-dir", setup["cache"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["per_class"] == [] and printed["metrics"]["fid"] > 0
    assert json.loads(out.read_text())["metrics"] == printed["metrics"]
    assert not (setup["run"] / "score.json").exists()


def test_npz_input_writes_no_score_json_unless_asked(setup, tmp_path):
    npz = tmp_path / "plain.npz"
    np.savez(npz, images=to_images(np.full((20, 10), 50.0)))
    result = invoke(npz, "--ref", setup["ref"], "--features", setup["ckpt"], "--metrics", "fid", "--cache-dir", setup["cache"])
    assert result.exit_code == 0, result.output
    assert "samples carry no labels" in result.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".json") == []


def test_cli_errors_are_one_line(setup, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(invoke(empty, "--ref", setup["ref"], "--features", setup["ckpt"]), "holds no images")
    assert_one_line_error(invoke(setup["run"], "--features", setup["ckpt"], "--kid-subset-size", "500", "--metrics", "kid",
                                 "--cache-dir", setup["cache"]), "--kid-subset-size 500 is larger than the 200 samples")
    assert_one_line_error(invoke(setup["run"], "--features", setup["ckpt"], "--metrics", "fid,lpips"), "unknown metric lpips")
    assert_one_line_error(invoke(setup["run"], "--ref", "nosuchdata", "--features", setup["ckpt"]), "unknown dataset 'nosuchdata'")
    rgb = write_ref(tmp_path / "rgb.npz", np.zeros((10, 1, 10, 3), np.uint8), np.zeros(10, np.int64))
    assert_one_line_error(invoke(setup["run"], "--ref", rgb, "--features", setup["ckpt"]), "grayscale (1 channel)", "RGB (3 channels)")

    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert_one_line_error(invoke(setup["run"]), "cannot download the Inception-v3 weights", "--inception-weights PATH")
    assert_one_line_error(invoke(setup["run"], "--inception-weights", tmp_path / "none.pth"), "--inception-weights", "file not found")


def test_help_lists_the_options():
    result = CliRunner().invoke(main, ["score", "--help"])
    assert result.exit_code == 0
    for option in ("--ref", "--ref-split", "--metrics", "--features", "--inception-weights", "--judge", "--no-per-class",
                   "--batch-size", "--device", "--data-root", "--kid-subset-size", "--out", "--json"):
        assert option in result.output


def test_a_reference_that_differs_from_the_samples_data_is_refused_as_sampling_refuses_it(setup):
    """One rule for a recorded dataset hash (robustgen.kernel.models.model_data.check_same_data): scoring refuses, like sampling."""
    meta = json.loads((setup["run"] / "meta.json").read_text())
    (setup["run"] / "meta.json").write_text(json.dumps({**meta, "dataset_sha256": "0" * 64}))
    result = CliRunner().invoke(main, ["score", str(setup["run"]), "--features", str(setup["ckpt"]), "--metrics", "fid", "--cache-dir", str(setup["cache"])])
    assert_one_line_error(result, "sha256 mismatch", "--data-root")
    assert not (setup["run"] / "score.json").exists()


def test_a_sample_run_on_some_of_its_models_classes_is_scored_against_them_in_the_models_indices(setup):
    """Scoring reads a sample run's reference the way its model reads data (model_data.model_dataset): a dataset with
    classes "3" and "7" of a 10-class model is relabelled 3 and 7, as sampling relabelled it, not 0 and 1."""
    rng, tmp = np.random.default_rng(1), setup["tmp"]
    x = to_images(100 + 20 * rng.normal(size=(120, 10)))
    y = np.arange(120) % 2
    np.savez(tmp / "two.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40], classes=np.asarray(["3", "7"]))
    run = tmp / "run-two"
    run.mkdir()
    n = 60
    np.savez(run / "samples.npz", images=to_images(110 + 25 * rng.normal(size=(n, 10))), labels=np.where(np.arange(n) % 2, 7, 3),
             energy_joint=np.zeros(n, np.float32), energy_marginal=np.zeros(n, np.float32), steps=np.ones(n, np.int64))
    (run / "meta.json").write_text(json.dumps({"dataset": f"npz:{tmp / 'two.npz'}", "checkpoint": {"path": str(setup["ckpt"])}}))
    result = invoke(run, "--features", setup["ckpt"], "--metrics", "fid", "--cache-dir", setup["cache"], "--json")
    assert result.exit_code == 0, result.output
    per_class = json.loads((run / "score.json").read_text())["per_class"]
    assert [(row["class_index"], row["n_reference"], row["n_samples"]) for row in per_class] == [(3, 60, 30), (7, 60, 30)], per_class
