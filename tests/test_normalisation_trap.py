"""Issue 23: a foreign model used without the normalisation it needs is caught, in one line, by every command.

The published ResNet-4B (../shared/models, a real alpha-beta-CROWN file) needs CIFAR-10's mean/std: without them it
classifies ~0.17 of the test images right instead of ~0.8. Every command that loads a foreign model (the sampled or
evaluated model, --features, --judge) measures it once on 200 fixed test images (cached per model and data) and
warns below 2x chance, naming the flags of that model; --strict refuses. inspect shows both accuracies. A randomly
initialised python: network (near chance by construction) checks the plumbing without ../shared.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clicheck import assert_one_line_error, invoke

from robustgen.kernel.models import sanity

from test_third_party_models import MODELS_DIR, SUBSET, norm_args, small_cifar, spec, subset  # noqa: F401  (fixtures)

needs_shared = pytest.mark.skipif(not (MODELS_DIR.is_dir() and SUBSET.is_file()), reason="../shared (real models, CIFAR subset) not present")


def _warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


@pytest.fixture
def random_net(tmp_path):
    """python:FILE.py:FACTORY=WEIGHTS of a randomly initialised 10-class net on an 8x8 gray npz (digits' shape, so a digits
    checkpoint can be the --features beside it): near chance whatever the normalisation."""
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n\ndef net():\n    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))\n")
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(256, 10)).state_dict(),
               tmp_path / "w.pt")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (400, 8, 8, 1), dtype=np.uint8)
    y = np.arange(400) % 10
    np.savez(tmp_path / "d.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    np.savez(tmp_path / "samples.npz", images=x[:20], labels=y[:20])
    return {"spec": f"python:{tmp_path / 'nets.py'}:net={tmp_path / 'w.pt'}", "data": f"npz:{tmp_path / 'd.npz'}", "samples": tmp_path / "samples.npz",
            "dir": tmp_path}


def test_every_front_door_warns_once_with_the_flags_of_that_model_and_strict_refuses(random_net, robust_digits_checkpoint, tmp_path):
    s, d = random_net["spec"], random_net["data"]
    runs = {
        "--mean/--std": ["sample", "--checkpoint", s, "--data", d, "-n", "2", "--steps", "1", "--out", tmp_path / "sample"],
        "--features-mean/--features-std": ["score", random_net["samples"], "--ref", d, "--features", s, "--no-memorisation", "--no-per-class",
                                           "--out", tmp_path / "score.json"],
    }
    for flags, argv in runs.items():
        result = invoke(argv)
        assert result.exit_code == 0, result.output
        lines = _warnings(result)
        assert len(lines) == 1 and flags in lines[0] and "near chance" in lines[0], result.stderr
        line = assert_one_line_error(invoke([*argv, "--strict"]), "near chance", flags, "--strict refuses")
        assert "\n" not in line
    judged = ["score", random_net["samples"], "--ref", d, "--features", robust_digits_checkpoint, "--judge", s, "--no-memorisation",
              "--no-per-class", "--out", tmp_path / "judged.json"]
    (line,) = _warnings(invoke(judged))
    assert line.startswith(f"warning: --judge {s} ") and "--features-mean/--features-std" in line, line
    assert_one_line_error(invoke([*judged, "--strict"]), f"--judge {s}", "--features-mean/--features-std")


def test_the_check_is_measured_once_per_model_and_data(random_net, monkeypatch):
    calls = []
    measure = sanity._measure
    monkeypatch.setattr(sanity, "_measure", lambda *a, **k: calls.append(1) or measure(*a, **k))
    argv = ["inspect", random_net["spec"], "--data", random_net["data"], "--images", "50"]
    for _ in range(2):
        assert invoke(argv).exit_code == 0
    assert len(calls) == 1  # the second run read the cached accuracy
    assert invoke([*argv, "--mean", "0.5", "--std", "0.25"]).exit_code == 0
    assert len(calls) == 2  # another normalisation is another model


def test_robustgen_checkpoints_are_not_checked(robust_digits_checkpoint, monkeypatch):
    monkeypatch.setattr(sanity, "_measure", lambda *a, **k: pytest.fail("a robustgen checkpoint carries its own normalisation"))
    result = invoke(["inspect", robust_digits_checkpoint, "--data", "digits", "--images", "20", "--strict"])
    assert result.exit_code == 0 and not _warnings(result), result.output


@needs_shared
def test_resnet4b_without_its_normalisation_is_caught_and_inspect_shows_both_accuracies():
    argv = ["inspect", spec("resnet4b"), "--data", f"npz:{SUBSET}", "--images", "300"]
    bare = invoke(argv)
    assert bare.exit_code == 0, bare.output
    (warning,) = _warnings(bare)
    assert "--mean/--std" in warning and "near chance" in warning, warning
    accuracy, other = (line for line in bare.stdout.splitlines() if " on 300 test images" in line or "own statistics" in line)
    measured, fixed = float(accuracy.split()[2]), float(other.split()[0])
    assert measured < 2 * 0.1 < fixed  # near chance without, far above with the data's statistics
    normalised = invoke([*argv, *norm_args("resnet4b")])
    assert normalised.exit_code == 0 and not _warnings(normalised), normalised.stderr
    assert_one_line_error(invoke([*argv, "--strict"]), "near chance", "--mean/--std", "--strict refuses")


@needs_shared
def test_a_judge_without_its_normalisation_names_the_judge_flags(small_cifar, tmp_path):  # noqa: F811
    argv = ["eval", spec("resnet20"), "--data", small_cifar, *norm_args("resnet20"), "--judge", spec("resnet4b"), "--judge-n", "10",
            "--subset", "10", "--steps", "1", "--restarts", "1", "--eps", "2/255"]
    line = assert_one_line_error(invoke([*argv, "--strict"]), "--judge", "--judge-mean/--judge-std", "near chance")
    assert "--features" not in line
    fixed = invoke([*argv, "--judge-mean", "0.4914,0.4822,0.4465", "--judge-std", "0.2471,0.2435,0.2616", "--strict"])
    assert fixed.exit_code == 0 and not _warnings(fixed), fixed.stderr
