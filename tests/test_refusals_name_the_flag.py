"""Issue 23: every refusal names the flag the user actually passed, and a refusal is one line with nothing before it.

--mean/--std for the model, --judge-mean/--judge-std for eval's judge, --features-mean/--features-std for score's
networks; a std <= 0 is said as such (not "give 3/3 values"); eval's --judge never talks about --features; inspect's
refusals name inspect's own options; sweep checks its model before it prints "sampling ..."; torch's two-line
UserWarning about a pickle protocol never precedes the one line.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from clicheck import assert_one_line_error, invoke

from test_own_models import nets  # noqa: F401  (the fixture: nets.py, small.pt, an 8x8 RGB npz)


@pytest.fixture
def own(nets):  # noqa: F811
    np.savez(nets["dir"] / "samples.npz", images=np.zeros((10, 8, 8, 3), np.uint8), labels=np.arange(10))
    return {**nets, "samples": nets["dir"] / "samples.npz"}


@pytest.mark.parametrize("std,shown", [("0,0.2,0.2", "--std holds 0"), ("-1,0.2,0.2", "--std holds -1")])
def test_a_std_that_is_not_positive_is_said_as_such(own, std, shown):
    line = assert_one_line_error(invoke(["inspect", own["spec"], "--data", own["data"], "--mean", "0.5,0.5,0.5", "--std", std]), shown, "> 0")
    assert "values for" not in line


def test_judge_normalisation_refusals_name_the_judge_flags(own, robust_digits_checkpoint):
    argv = ["eval", own["spec"], "--data", own["data"], "--judge", own["spec"]]
    assert_one_line_error(invoke([*argv, "--judge-mean", "0.5,0.5,0.5", "--judge-std", "0,1,1"]), "--judge-std holds 0")
    line = assert_one_line_error(invoke([*argv, "--judge-mean", "0.5", "--judge-std", "1"]), "--judge-mean/--judge-std give 1/1 values")
    assert "--mean 0.485" not in line and " --std " not in line
    assert_one_line_error(invoke([*argv, "--judge-mean", "0.5,0.5,0.5"]), "give both --judge-mean and --judge-std")
    own_norm = ["eval", robust_digits_checkpoint, "--judge", robust_digits_checkpoint, "--judge-mean", "0.5", "--judge-std", "0.5"]
    assert_one_line_error(invoke(own_norm), "carries its own normalisation, so --judge-mean/--judge-std do not apply")


def test_features_normalisation_refusals_name_the_features_flags(own):
    argv = ["score", own["samples"], "--ref", own["data"], "--features", own["spec"], "--out", own["dir"] / "s.json"]
    assert_one_line_error(invoke([*argv, "--features-mean", "0.5,0.5,0.5", "--features-std", "1,0,1"]), "--features-std holds 0")
    assert_one_line_error(invoke([*argv, "--features-mean", "0.5,0.5", "--features-std", "1,1"]), "--features-mean/--features-std give 2/2")


def test_eval_judge_refusals_never_mention_features(own, robust_digits_checkpoint, tmp_path):
    for judge in (own["spec"], tmp_path / "missing.pt"):  # a judge for 8x8 RGB on digits' 8x8 gray; a missing file
        line = assert_one_line_error(invoke(["eval", robust_digits_checkpoint, "--judge", judge, "--judge-n", "10", "--subset", "10", "--steps", "1", "--restarts", "1"]), "--judge")
        assert "--features" not in line, line


def test_inspect_refusals_name_inspects_own_options(own):
    line = assert_one_line_error(invoke(["inspect", own["spec"], "--data", own["data"], "--images", "0"]), "--images 0 must be at least 1")
    assert "--batch-size" not in line
    bare = assert_one_line_error(invoke(["inspect", own["dir"] / "small.pt", "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2"]),
                                 "is not a robustgen checkpoint", "python:FILE.py:FACTORY")
    assert "carries its own normalisation" not in bare


def test_sweep_refuses_a_bad_model_before_it_prints_sampling(own, robust_digits_checkpoint, tmp_path):
    argv = ["sweep", "--checkpoint", own["dir"] / "small.pt", "--features", robust_digits_checkpoint, "--knob", "steps", "--values", "1",
            "-n", "2", "--out", tmp_path / "sweep"]
    result = invoke(argv)  # one line on stderr: no "sampling ..." before it
    assert_one_line_error(result, "is not a robustgen checkpoint")
    assert not (tmp_path / "sweep").exists()
    unknown_class = ["sweep", "--checkpoint", robust_digits_checkpoint, "--features", robust_digits_checkpoint, "--knob", "steps", "--values", "1",
                     "-n", "2", "--class", "zebra", "--out", tmp_path / "sweep"]
    assert_one_line_error(invoke(unknown_class), "zebra")
    assert not (tmp_path / "sweep").exists()


def test_a_plain_pickle_is_refused_without_torchs_pickle_protocol_warning(tmp_path):
    import pickle

    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"weight": 1}))  # protocol 4 or 5: torch warns about any but 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for argv in (["eval", tmp_path / "raw.pt"], ["inspect", f"torchvision:resnet18={tmp_path / 'raw.pt'}"]):
            assert_one_line_error(invoke(argv))
    assert not [w for w in caught if "pickle protocol" in str(w.message)], [str(w.message) for w in caught]
    torch.save({"weight": torch.zeros(1)}, tmp_path / "fine.pt")  # (torch.save's own files never warned)
