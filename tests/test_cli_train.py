"""`robustgen train / eval / diagnose` through click's CliRunner: results, tables, JSON, and bad input."""

import json
import urllib.error

import pytest
import torch
from click.testing import CliRunner
from clicheck import assert_one_line_error

from robustgen.cli import main

TINY = ["--width", "4", "--epochs", "1", "--eval-pgd-steps", "1", "--eval-subset", "40", "--device", "cpu"]


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_help_texts_are_useful():
    for command in ("train", "eval", "diagnose"):
        result = _run([command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output
    assert "--der-gamma" in _run(["train", "--help"]).output


@pytest.mark.slow
def test_train_json_then_eval_then_diagnose(tmp_path):
    out = tmp_path / "run"
    result = _run(["train", "digits", "--method", "fgsm-rs", "--der", "--eps", "26/255", "--out", str(out), "--json", *TINY])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["config"]["eps"] == pytest.approx(26 / 255) and summary["best"] == str(out / "best.pt")
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()

    result = _run(["eval", str(out / "best.pt"), "--steps", "2", "--restarts", "1", "--subset", "30", "--json"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout)
    assert evaluation["n"] == 30 and evaluation["eps"] == pytest.approx(26 / 255)
    assert 0 <= evaluation["robust_acc"] <= evaluation["clean_acc"] <= 1

    table = _run(["eval", str(out / "best.pt"), "--steps", "1", "--restarts", "1", "--subset", "20", "--eps", "1.5", "--norm", "L2"])
    assert table.exit_code == 0 and "PGD-1-1 acc" in table.stdout and "L2 eps 1.5" in table.stdout  # L2 radii may exceed 1

    resumed = _run(["train", "--resume", str(out), "--json"])  # a finished run: nothing left to do, same result
    assert resumed.exit_code == 0 and json.loads(resumed.stdout)["best"] == summary["best"]

    result = _run(["diagnose", str(out), "--n", "16", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for name in ("curves.png", "quiver.png"):
        assert (out / name).stat().st_size > 1000


def test_train_table_and_default_out_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run(["train", "digits", "--method", "standard", *TINY])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "digits-standard" / "best.pt").is_file()
    assert "best.pt" in result.stdout and "test clean acc" in result.stdout
    again = _run(["train", "digits", "--method", "standard", *TINY])  # same default out dir: refused
    assert_one_line_error(again, "already holds files", "--resume", "--overwrite")
    assert _run(["train", "digits", "--method", "standard", "--overwrite", *TINY]).exit_code == 0


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["train", "nosuchset"], "unknown dataset"),
        (["train", "digits", "--method", "pgdd"], "--method"),
        (["train", "digits", "--eps", "8/256x"], "cannot read --eps"),
        (["train", "digits", "--eps", "8"], "outside pixel space"),
        (["train", "digits", "--epochs", "0"], "--epochs must be at least 1"),
        (["train", "digits", "--norm", "L1"], "--norm"),
        (["train", "digits", "--der", "--method", "standard"], "--der needs adversarial"),
        (["train", "npz:/nonexistent/data.npz"], "not found"),
        (["train", "--resume", "/nonexistent/run"], "would be ignored"),  # TINY's options come with it: refused, not ignored
        (["eval", "/nonexistent/best.pt"], "not found"),
        (["eval", "x.pt", "--attack", "cw"], "unknown attack"),
        (["diagnose", "/nonexistent/run"], "not a training run dir"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    full = args[:1] + TINY + args[1:] if args[0] == "train" else args  # the case's own options come last and win
    assert_one_line_error(_run(full), fragment)
    assert not (tmp_path / "runs").exists()


def test_missing_data_offline_is_one_clear_line(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    out = tmp_path / "run"
    result = _run(["train", "cifar10", "--data-root", str(tmp_path / "data"), "--out", str(out), *TINY])
    assert_one_line_error(result, "cifar10", "--data-root")
    assert not out.exists()


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    assert_one_line_error(_run(["train", "digits", "--out", str(blocker / "run"), *TINY]), "cannot write to output directory")


def test_eval_rejects_foreign_unreadable_and_mismatched_checkpoints(tmp_path, robust_digits_checkpoint):
    plain = tmp_path / "plain.pt"
    torch.save({"conv.weight": torch.zeros(2)}, plain)
    assert_one_line_error(_run(["eval", str(plain)]), "not a robustgen checkpoint")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage")
    assert_one_line_error(_run(["eval", str(junk)]), "cannot read checkpoint")
    payload = torch.load(robust_digits_checkpoint, weights_only=True)
    payload["meta"]["arch_args"]["num_classes"] = 7  # claims another head: weights do not fit
    foreign = tmp_path / "foreign.pt"
    torch.save(payload, foreign)
    assert_one_line_error(_run(["eval", str(foreign)]), "does not fit this architecture")
