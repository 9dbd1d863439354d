"""`robustgen demo` end to end on a reduced budget, and `robustgen report`."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from clicheck import assert_one_line_error

from robustgen.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--robust-epochs", "1", "--reference-epochs", "1", "-n", "40", "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout[result.stdout.index("{"):])


@pytest.mark.slow
def test_demo_trains_samples_scores_and_reports(demo_dir):
    out, summary = demo_dir
    for run in ("robust", "reference"):
        assert (out / run / "best.pt").exists() and (out / run / "metrics.jsonl").exists()
    samples = out / "samples"
    default = summary["scores"]["default"]
    init_only = "init-only:local-pca"  # today's start, the default's control
    assert {"calibrated", "default", init_only, "santurkar", "real-test", "real-train"} <= set(summary["scores"])
    assert {name for name in summary["scores"] if not name.startswith("init-only:")} == {"calibrated", "default", "santurkar", "real-test", "real-train"}
    chosen = json.loads((out / "robust" / "calibration.json").read_text())["chosen"]  # calibrated with the reference classifier as judge
    meta = json.loads((samples / "calibrated" / "meta.json").read_text())
    assert meta["sampler"]["steps"] == chosen["sampler"]["steps"] and meta["stop"] == chosen["stop"] and meta["init"]["k"] == chosen["init"]["k"]
    for name in ("default", "santurkar"):
        with np.load(samples / name / "samples.npz") as z:
            assert z["images"].shape == (40, 8, 8, 1) and sorted(set(z["labels"].tolist())) == list(range(10))
        scores = json.loads((samples / name / "score.json").read_text())
        assert scores["metrics"]["fid"] >= 0 and 1 <= scores["metrics"]["is_mean"] <= 10
        assert scores["splits"]["fid_test"] == scores["splits"]["recall_test"] == "test" and scores["splits"]["fid"] == "train"
        assert scores["comparable_with_papers"] is False  # a classifier extractor, and it says so
    assert summary["scores"][init_only]["grad_evals_per_image"] == 0 and summary["scores"]["santurkar"]["grad_evals_per_image"] == 60
    assert default["gain_fid_test"] == pytest.approx(default["fid_test"] - summary["scores"][init_only]["fid_test"])
    assert 0 <= default["near_copy_fraction_pixel"] <= 1 and summary["scores"]["real-test"]["nn_ratio_pixel"] == pytest.approx(1.0)
    assert "reference classifier" in summary["extractor"]
    page = (out / "report.html").read_text()
    assert summary["report"] == str(out / "report.html")
    assert all(ref.startswith("data:image/png;base64,") for ref in re.findall(r'(?:src|href)="([^"]+)"', page))
    assert "Comparison" in page and "gain FID (test)" in page and "start, middle and final" in page
    assert page.count("<img") >= 8  # grids, strips, training curves


@pytest.mark.slow
def test_demo_refuses_an_existing_dir_and_resume_skips_finished_stages(demo_dir):
    out, _ = demo_dir
    refused = CliRunner().invoke(main, ["demo", "--out", str(out)])
    assert_one_line_error(refused, "already holds a demo: pass --resume")
    best_before = (out / "robust" / "best.pt").stat().st_mtime_ns
    resumed = CliRunner().invoke(main, ["demo", "--out", str(out), "--robust-epochs", "1", "--reference-epochs", "1", "-n", "40", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.count("already done, skipped") == 3  # both trainings and the calibration
    assert (out / "robust" / "best.pt").stat().st_mtime_ns == best_before


def test_report_command_and_its_error(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert_one_line_error(result, "holds no robustgen run")
