"""The HTML report: builds for each kind of run dir and is self-contained."""

import re
import shutil

import numpy as np
import pytest
from PIL import Image

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import append_jsonl, atomic_write_json, read_jsonl
from robustgen.app.report import build_report


def _training_dir(path, run_dir):
    """A copy of a real training run dir (the session's tiny digits run) whose epoch 2 raised a CO alarm."""
    path.mkdir(parents=True)
    for name in ("config.json", "curves.png"):
        shutil.copy2(run_dir / name, path / name)
    for record in read_jsonl(run_dir / "metrics.jsonl"):
        append_jsonl(path / "metrics.jsonl", {**record, "co_alarm": "test PGD acc collapsed" if record["epoch"] == 1 else None})


def _sample_dir(path, with_score=True):
    path.mkdir(parents=True)
    np.savez(path / "samples.npz", images=np.zeros((4, 8, 8, 1), np.uint8), labels=np.arange(4))
    Image.new("L", (32, 32)).save(path / "grid.png")
    atomic_write_json(path / "meta.json", {"init": {"kind": "local-pca"}, "sampler": {"kind": "sgld"}, "n": 4})
    if with_score:
        atomic_write_json(path / "score.json", {"metrics": {"fid": 12.5, "is_mean": 8.1}, "extractor": {"description": "robustgen classifier abc"},
                                                 "label": "features: robustgen classifier abc: not comparable with Inception-based numbers in papers"})


def _references(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page)


@pytest.mark.parametrize("kind", ["train", "sample", "combined"])
def test_report_builds_for_each_kind_of_run_dir(tmp_path, kind, robust_digits_checkpoint):
    if kind in ("train", "combined"):
        _training_dir(tmp_path / "train" if kind == "combined" else tmp_path / "run", robust_digits_checkpoint.parent)
    if kind in ("sample", "combined"):
        _sample_dir(tmp_path / "samples" if kind == "combined" else tmp_path / "run")
    root = tmp_path if kind == "combined" else tmp_path / "run"
    page_path = build_report(root)
    page = page_path.read_text()
    assert page_path.name == "report.html"
    # Self-contained: every reference is an embedded image, nothing points at a file or server.
    refs = _references(page)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    if kind != "sample":
        assert "Training run" in page and "catastrophic-overfitting alarms" in page
        assert "catastrophic-overfitting alarms</th><td>2<" in page  # the CO alarm's epoch, counted from 1
        summary = page[page.index("Training run"):page.index("<details><summary>config.json")]  # the run's table, not config.json's
        assert "last PGD-3 acc" in summary and "<th>epochs</th><td>6</td>" in summary  # the fixture's eval PGD steps and epochs trained
    if kind != "train":
        assert "local-pca" in page and "12.5" in page and "not comparable with Inception" in page
    if kind == "combined":  # the pictures come first, the numbers after
        assert page.index("<h2>Samples</h2>") < page.index("Training run")


def test_report_rejects_a_dir_without_runs(tmp_path):
    with pytest.raises(RobustgenError, match="holds no robustgen run"):
        build_report(tmp_path)
    with pytest.raises(RobustgenError, match="is not a directory"):
        build_report(tmp_path / "missing")


@pytest.mark.parametrize("content", [b"\x89PNG not json at all\n", b'{"epoch": 0}\nnot json\n{"epoch": 1}\n', b"[1, 2]\n"])
def test_report_refuses_an_unreadable_metrics_file(tmp_path, content, robust_digits_checkpoint):
    run = tmp_path / "run"
    _training_dir(run, robust_digits_checkpoint.parent)
    (run / "metrics.jsonl").write_bytes(content)
    with pytest.raises(RobustgenError, match="metrics.jsonl"):
        build_report(run)
    assert not (run / "report.html").exists()


def _memorisation_score(path, file="memorisation.npz"):
    space = {"median_nn_distance_samples": 0.5, "median_nn_distance_test": 1.0, "nn_ratio": 0.5, "near_copy_fraction": 0.25,
             "copying": {"C_T": -3.2, "cells_used": 5, "n_cells": 9, "reading": "C_T = -3.2 << 0: data-copying"}}
    atomic_write_json(path / "score.json", {
        "metrics": {"fid": 12.5, "fid_test": 14.0, "nn_ratio_pixel": 0.5}, "splits": {"fid": "train", "fid_test": "test"},
        "label": "features: x", "memorisation": {"n_train": 100, "n_test": 20, "spaces": {"pixels": space, "features": space}, "file": file},
    })


@pytest.mark.parametrize("channels", [1, 3])
def test_report_shows_memorisation_numbers_and_the_closest_pairs(tmp_path, channels):
    run = tmp_path / "run"
    _sample_dir(run, with_score=False)
    _memorisation_score(run)
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 256, (8, 8, 8, channels), dtype=np.uint8)
    np.savez(run / "memorisation.npz", pair_sample_images=pairs, pair_train_images=pairs[::-1])
    page = build_report(run).read_text()
    assert "Memorisation: run" in page and "data-copying" in page and "-3.2" in page and "Meehan" in page
    assert 'class="pairs"' in page and "Closest pairs in pixel space" in page
    assert "fid: vs train; fid_test: vs test" in page
    assert all(r.startswith("data:image/png;base64,") for r in _references(page))


def test_report_without_or_with_a_damaged_memorisation_file_still_builds(tmp_path):
    run = tmp_path / "run"
    _sample_dir(run, with_score=False)
    _memorisation_score(run, file="../../elsewhere.npz")  # only a name beside score.json is ever read
    (tmp_path / "elsewhere.npz").write_bytes(b"")
    page = build_report(run).read_text()
    assert "Memorisation: run" in page and 'class="pairs"' not in page and "images are missing" in page
    _memorisation_score(run)
    np.save(run / "memorisation.npz", np.zeros(3))  # np.save appends .npy: make a real .npy under the .npz name
    (run / "memorisation.npz.npy").rename(run / "memorisation.npz")
    assert "images are missing" in build_report(run).read_text()
    (run / "memorisation.npz").write_bytes(b"PK\x03\x04 truncated")
    assert "images are missing" in build_report(run).read_text()
