"""Real third-party CIFAR-10 models from ../shared/models, in their published formats, through every command.

The architectures are tests/fixtures/third_party_cifar.py, written from the shapes in the models'
README as a user of such a file would. Each file loads through `python:` at the accuracy its README
gives (on the CIFAR subset's 1,017 test images), through `torchscript:` and `export:` after exporting it
here, is sampled from and evaluated with PGD from the CLI; the standard ResNet-20 serves as
`score --features/--judge` and `sweep --features`. Skipped when ../shared is absent.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from clicheck import invoke

from robustgen.kernel.io import sha256_file
from robustgen.kernel.models.sources import ModelSpec, load_classifier

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS_DIR, SUBSET = SHARED / "models", SHARED / "data" / "cifar10-subset.npz"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "third_party_cifar.py"
CIFAR_STD_NORM = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
# factory -> (file, mean, std, clean accuracy on the subset's 1,017 test images, measured with the README's mean/std)
MODELS = {
    "resnet20": ("akamaster_cifar10_resnet20-12fca82f.th", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.916),
    "cnn_a": ("abcrown_sdp_cifar_cnn_a_adv.model", tuple(v / 255 for v in (125.3, 123.0, 113.9)), tuple(v / 255 for v in (63.0, 62.1, 66.7)), 0.667),
    "conv_small": ("abcrown_eran_cifar_conv_small_pgd.pth", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), 0.632),
    "resnet4b": ("abcrown_cifar10_resnet4b.pth", *CIFAR_STD_NORM, 0.773),
}
ACCURACY_TOLERANCE = 0.01  # the published weights on fixed images: only float rounding moves it (10 images = 0.01)

pytestmark = pytest.mark.skipif(not (MODELS_DIR.is_dir() and SUBSET.is_file()), reason=f"{SHARED} (real models and CIFAR subset) not present")


def spec(name: str) -> str:
    return f"python:{FIXTURE}:{name}={MODELS_DIR / MODELS[name][0]}"


def norm_args(name: str) -> list[str]:
    _, mean, std, _ = MODELS[name]
    return ["--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std))]


@pytest.fixture(scope="module")
def subset():
    with np.load(SUBSET) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def small_cifar(subset, tmp_path_factory) -> str:
    """20 training and 10 test images per class from the real subset: small enough for sampling and scoring in seconds."""
    pick = lambda y, k: np.sort(np.concatenate([np.flatnonzero(y == c)[:k] for c in range(10)]))  # noqa: E731
    train, test = pick(subset["y_train"], 20), pick(subset["y_test"], 10)
    path = tmp_path_factory.mktemp("cifar-small") / "cifar-small.npz"
    np.savez(path, x_train=subset["x_train"][train], y_train=subset["y_train"][train], x_test=subset["x_test"][test], y_test=subset["y_test"][test],
             classes=subset["classes"])
    return f"npz:{path}"


def _load(name: str, data: str, source_spec: str | None = None):
    _, mean, std, _ = MODELS[name]
    return load_classifier(source_spec or spec(name), mean=mean, std=std, data=data)


def _accuracy(model, x, y) -> float:
    from robustgen.kernel.models.inspection import clean_accuracy

    return clean_accuracy(model, x, y, batch_size=512)


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[min(i for i in (result.stdout.find("{"), result.stdout.find("[")) if i >= 0):])


@pytest.mark.parametrize("name", list(MODELS))
def test_python_spec_loads_the_published_file_at_its_accuracy(name, subset):
    model, meta = _load(name, f"npz:{SUBSET}")
    accuracy = _accuracy(model, subset["x_test"], subset["y_test"])
    assert accuracy == pytest.approx(MODELS[name][3], abs=ACCURACY_TOLERANCE)
    assert meta["classes"][3] == "cat" and meta["input_shape"] == [3, 32, 32] and meta["weights_sha256"] == sha256_file(MODELS_DIR / MODELS[name][0])
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the last linear layer is split off: penultimate features for scoring and feature-space neighbours
        assert torch.allclose(model.head(model.features(x)), model(x), atol=1e-5)


def _plain_network(name: str) -> torch.nn.Module:
    """The network with its weights, loaded by hand the way each file's README says (what a user exports)."""
    import importlib.util

    module_spec = importlib.util.spec_from_file_location("third_party_cifar_for_export", FIXTURE)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    net = getattr(module, name)()
    payload = torch.load(MODELS_DIR / MODELS[name][0], map_location="cpu", weights_only=True)
    state = {"resnet20": lambda p: {k[len("module."):]: v for k, v in p["state_dict"].items()}, "cnn_a": lambda p: p,
             "conv_small": lambda p: p["state_dict"][0], "resnet4b": lambda p: p["state_dict"]}[name](payload)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)  # ResNet-20 predates that buffer
    return net.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_torchscript_and_export_of_each_file_match_the_python_spec(name, subset, small_cifar, tmp_path):
    net = _plain_network(name)
    example = torch.rand(2, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation warnings
        torch.jit.save(torch.jit.trace(net, example), tmp_path / "model.ts")
    torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)), tmp_path / "model.pt2")
    from robustgen.kernel.data import to_float

    x = to_float(subset["x_test"][:100])
    reference, _ = _load(name, small_cifar)
    with torch.no_grad():
        expected = reference(x)
    for source_spec in (f"torchscript:{tmp_path / 'model.ts'}", f"export:{tmp_path / 'model.pt2'}"):
        model, meta = _load(name, small_cifar, source_spec)
        with torch.no_grad():  # the same logits, so the same accuracy as the python: spec (checked against the README above)
            assert torch.allclose(model(x), expected, atol=1e-4), source_spec
        assert meta["classes"] == reference_classes(subset) and meta["weights_sha256"] == sha256_file(source_spec.split(":", 1)[1])


def reference_classes(subset) -> list[str]:
    return [str(c) for c in subset["classes"]]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_sample_and_pgd_eval_each_file_from_the_cli(name, small_cifar, tmp_path):
    out = tmp_path / "samples"
    summary = _json(invoke(["sample", "--checkpoint", spec(name), *norm_args(name), "--data", small_cifar, "--class", "cat", "-n", 2,
                            "--steps", 2, "--init", "pca", "--stop", "fixed", "--batch-size", 2, "--out", out, "--device", "cpu", "--json"]))
    assert summary["images"] == 2 and summary["classes"] == [3] and summary["grad_evals_per_image"] == 2
    run_meta = json.loads((out / "meta.json").read_text())
    assert run_meta["checkpoint_sha256"] == sha256_file(MODELS_DIR / MODELS[name][0]) and run_meta["class_names"] == ["cat"]
    result = _json(invoke(["eval", spec(name), *norm_args(name), "--data", small_cifar, "--eps", "2/255", "--steps", 2, "--restarts", 1,
                           "--subset", 16, "--device", "cpu", "--json"]))
    assert result["n"] == 16 and result["source"] == "python" and 0 <= result["robust_acc"] <= result["clean_acc"] <= 1
    assert any("10 classes from" in note for note in result["notes"])


@pytest.mark.slow
def test_torchscript_and_export_specs_sample_and_evaluate_with_pgd_and_autoattack(small_cifar, tmp_path):
    pytest.importorskip("pyautoattack", reason="AutoAttack needs the zoo extra")
    net = _plain_network("cnn_a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(net), tmp_path / "cnn_a.ts")
    torch.export.save(torch.export.export(net, (torch.rand(2, 3, 32, 32),), dynamic_shapes=({0: torch.export.Dim("batch")},)), tmp_path / "cnn_a.pt2")
    for source_spec in (f"torchscript:{tmp_path / 'cnn_a.ts'}", f"export:{tmp_path / 'cnn_a.pt2'}"):
        common = [*norm_args("cnn_a"), "--data", small_cifar, "--device", "cpu"]
        out = tmp_path / source_spec.split(":")[0]
        summary = _json(invoke(["sample", "--checkpoint", source_spec, *common, "--class", "ship", "-n", 2, "--steps", 2, "--init", "pca",
                                "--stop", "fixed", "--out", out, "--json"]))
        assert summary["images"] == 2 and summary["classes"] == [8]
        pgd = _json(invoke(["eval", source_spec, *common, "--eps", "2/255", "--steps", 2, "--restarts", 1, "--subset", 8, "--json"]))
        assert pgd["n"] == 8 and pgd["robust_acc"] <= pgd["clean_acc"]
        aa = _json(invoke(["eval", source_spec, *common, "--eps", "2/255", "--attack", "apgd-ce", "--steps", 2, "--subset", 4,
                           "--state", tmp_path / f"{out.name}-aa.json", "--json"]))
        assert aa["n"] == 4 and aa["within_eps"] and aa["robust_acc"] <= aa["clean_acc"]


@pytest.mark.slow
def test_resnet20_as_score_features_and_judge_equals_its_own_numbers(small_cifar, subset, tmp_path):
    from samplers.scoring import score
    from test_scoring import frechet

    from robustgen.kernel.data import load_dataset, to_float

    _, mean, std, _ = MODELS["resnet20"]
    resnet20 = ModelSpec(spec("resnet20"), mean=mean, std=std)
    images, labels = subset["x_test"][-60:], subset["y_test"][-60:]  # not in small_cifar's test split
    result = score(images, labels=labels, ref=small_cifar, features=resnet20, judge=resnet20, metrics=("fid",), per_class=False,
                   memorisation=False, cache_dir=tmp_path / "cache", device="cpu")
    model, _ = _load("resnet20", small_cifar)
    train = load_dataset(small_cifar).x_train
    with torch.no_grad():
        direct = frechet(model.features(to_float(images)).numpy(), model.features(to_float(train)).numpy())
    assert result.metrics["fid"] == pytest.approx(direct, rel=1e-3)
    assert result.metrics["judge_accuracy"] == _accuracy(model, images, labels)
    assert result.extractor.feature_dim == 64 and not result.comparable_with_papers and "python classifier" in result.extractor.description


@pytest.mark.slow
def test_score_and_sweep_take_a_python_spec_as_features_and_judge_and_report_reads_them(small_cifar, tmp_path):
    judge = [spec("resnet20"), "--features-mean", "0.485,0.456,0.406", "--features-std", "0.229,0.224,0.225"]
    out = tmp_path / "samples"
    _json(invoke(["sample", "--checkpoint", spec("resnet4b"), *norm_args("resnet4b"), "--data", small_cifar, "-n", 20, "--steps", 2, "--init", "pca",
                  "--stop", "fixed", "--out", out, "--device", "cpu", "--json"]))
    scored = _json(invoke(["score", out, "--ref", small_cifar, "--metrics", "fid", "--features", judge[0], "--judge", *judge,
                           "--device", "cpu", "--cache-dir", tmp_path / "cache", "--json"]))
    assert scored["metrics"]["judge_accuracy"] is not None and scored["judge"]["checkpoint"] == spec("resnet20")
    assert scored["extractor"]["checkpoint"] == spec("resnet20")
    sweep = tmp_path / "sweep"
    rows = _json(invoke(["sweep", "--checkpoint", spec("resnet4b"), *norm_args("resnet4b"), "--data", small_cifar, "--features", *judge,
                         "--knob", "steps", "--values", "0,2", "--no-controls", "-n", 10, "--init", "pca", "--stop", "fixed", "--out", sweep,
                         "--device", "cpu", "--json"]))
    assert [r["name"] for r in rows] == ["steps=0", "steps=2"] and all(r["judge_accuracy"] is not None for r in rows)
    report = invoke(["report", sweep])
    assert report.exit_code == 0, report.output
    assert "steps=2" in (sweep / "report.html").read_text()
