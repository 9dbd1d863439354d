"""`robustgen sample` through click's CliRunner: outputs, options and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from clicheck import assert_one_line_error

from robustgen.kernel.models.checkpoint import load_checkpoint, save_checkpoint
from robustgen.cli import main


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTGEN_CACHE", str(tmp_path / "cache"))


def _run(*args):
    return CliRunner().invoke(main, ["sample", *map(str, args)])


def test_sample_writes_run_dir_and_json(robust_digits_checkpoint, tmp_path):
    out = tmp_path / "s"
    result = _run("--checkpoint", robust_digits_checkpoint, "--class", "3", "--class", "8", "--n", 10, "--out", out, "--png", "--json",
                  "--init", "pca", "--sampler", "pgd", "--stop", "fixed", "--steps", 5, "--step-size", 0.05, "--norm", "Linf", "--eps", "16/255")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["images"] == 10 and summary["classes"] == [3, 8] and summary["grad_evals_per_image"] == 5
    meta = json.loads((out / "meta.json").read_text())
    assert meta["sampler"]["eps"] == pytest.approx(16 / 255) and meta["sampler"]["norm"] == "Linf" and meta["init"]["kind"] == "pca"
    assert len(list((out / "png").rglob("*.png"))) == 10 and (out / "grid.png").is_file()
    with np.load(out / "samples.npz") as z:
        assert sorted(set(z["labels"].tolist())) == [3, 8]


def test_defaults_all_classes_and_default_out(robust_digits_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run("--checkpoint", robust_digits_checkpoint, "--n", 20, "--k", 5, "--neighbour-space", "features")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "runs" / "samples-digits" / "samples.npz") as z:
        assert np.array_equal(np.bincount(z["labels"]), np.full(10, 2))
    again = _run("--checkpoint", robust_digits_checkpoint, "--class", "3", "--n", 4)
    assert again.exit_code == 0 and (tmp_path / "runs" / "samples-digits-3" / "grid.png").is_file()


def test_errors_are_one_line_and_write_nothing(robust_digits_checkpoint, tmp_path):
    out = tmp_path / "never"
    assert_one_line_error(_run("--checkpoint", robust_digits_checkpoint, "--class", 10, "--out", out), "out of range")
    assert_one_line_error(_run("--checkpoint", robust_digits_checkpoint, "--class", "cat", "--out", out), "unknown class 'cat'")
    assert_one_line_error(_run("--checkpoint", robust_digits_checkpoint, "--n", 0, "--out", out), "--num-images 0")
    assert_one_line_error(_run("--checkpoint", tmp_path / "missing.pt", "--out", out), "not found")
    assert_one_line_error(_run("--checkpoint", robust_digits_checkpoint, "--variance", 2, "--out", out), "--variance")
    assert not out.exists()
    done = tmp_path / "done"
    assert _run("--checkpoint", robust_digits_checkpoint, "--n", 3, "--class", 1, "--out", done).exit_code == 0
    before = (done / "samples.npz").read_bytes()
    assert_one_line_error(_run("--checkpoint", robust_digits_checkpoint, "--n", 3, "--class", 1, "--out", done), "--overwrite")
    assert (done / "samples.npz").read_bytes() == before
    assert _run("--checkpoint", robust_digits_checkpoint, "--n", 3, "--class", 1, "--out", done, "--resume").exit_code == 0
    assert_one_line_error(_run("--checkpoint", robust_digits_checkpoint, "--n", 5, "--class", 1, "--out", done, "--resume"), "options differ")


def test_missing_dataset_says_what_data_and_how_to_point_to_it(robust_digits_checkpoint, tmp_path):
    model, meta = load_checkpoint(robust_digits_checkpoint)
    moved = tmp_path / "moved.pt"
    save_checkpoint(moved, model=model, meta={**meta, "dataset": f"npz:{tmp_path}/gone.npz"})
    out = tmp_path / "o"
    result = _run("--checkpoint", moved, "--n", 2, "--out", out)
    assert_one_line_error(result, "gone.npz")
    assert "--data-root" in result.output and "--dataset npz:PATH" in result.output and not out.exists()
    # pointing at the data fixes it
    assert _run("--checkpoint", moved, "--n", 2, "--out", out, "--dataset", "digits").exit_code == 0
