"""Model sources in their real on-disk formats, built here from randomly initialised architectures (offline).

RobustBench's Wong2020Fast (PreActResNet-18) in RobustBench's model-dir layout, a ResNet-50 in the
MadryLab `robustness` layout, torchvision and timm state dicts: each is loaded, sampled from for two
steps and evaluated through the CLI. Plus the one-line errors: wrong architecture, unknown model name,
a file that needs unpickling, a missing file offline, an unknown source, a missing optional package.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from clicheck import assert_one_line_error

from robustgen.cli import main
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import sha256_file
from robustgen.kernel.models.foreign import IMAGENET_MEAN, IMAGENET_STD
from robustgen.kernel.models.classes import CIFAR10_CLASSES, align_dataset, imagenet_classes
from robustgen.kernel.models.sources import load_classifier

WONG = "robustbench:cifar10/Linf/Wong2020Fast"
WONG_GDRIVE = "1Re--_lf3jCEw9bnQqGkjw3J7v2tSZKrv"  # RobustBench's download id for Wong2020Fast


@pytest.fixture(autouse=True)
def _hermetic(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ROBUSTGEN_MODEL_DIR", raising=False)


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


# --------------------------------------------------------------------------- files in their real layouts


def _robustbench():
    """robustbench's zoo (imported the way robustgen does: its package __init__ may not import), or skip."""
    from robustgen.kernel.models import robustbench_zoo

    try:
        return robustbench_zoo.import_robustbench()
    except RobustgenError as exc:
        pytest.skip(f"RobustBench architectures need the zoo extra ({exc})")


def _wong_net():
    rb = _robustbench()
    torch.manual_seed(0)
    return rb.model_dicts[rb.BenchmarkDataset("cifar10")][rb.ThreatModel("Linf")]["Wong2020Fast"]["model"]().eval()


def _save_wong(model_dir, net) -> "Path":  # noqa: F821
    """RobustBench's file: <model_dir>/cifar10/Linf/Wong2020Fast.pt, a plain state dict without the mu/sigma buffers."""
    path = model_dir / "cifar10" / "Linf" / "Wong2020Fast.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v for k, v in net.state_dict().items() if k not in ("mu", "sigma")}, path)
    return path


@pytest.fixture
def cifar_npz(tmp_path):
    """A tiny CIFAR-shaped dataset (random pixels, CIFAR-10 class names), as `npz:` reads it."""
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar-tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8), y_train=np.arange(30) % 10,
             x_test=rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), y_test=np.arange(10), classes=np.array(CIFAR10_CLASSES))
    return path


@pytest.fixture
def imagenet_folder(tmp_path):
    """A 2-class ImageFolder of 224x224 PNGs whose folders name ImageNet classes by index (1 goldfish, 207 golden retriever)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    root = tmp_path / "imagenet-2"
    for split, count in (("train", 2), ("val", 1)):
        for cls in ("1", "207"):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def _resnet50():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


def _save_robustness(path, net, *, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
    """MadryLab robustness layout: AttackerModel(normalizer, model, attacker) under DataParallel, saved as {"model", "optimizer", ...}."""
    state = {}
    normalizer = {"new_mean": torch.tensor(mean).view(3, 1, 1), "new_std": torch.tensor(std).view(3, 1, 1)}
    for k, v in normalizer.items():
        state[f"module.normalizer.{k}"] = v
    for k, v in net.state_dict().items():
        state[f"module.model.{k}"] = v
    for k, v in normalizer.items():
        state[f"module.attacker.normalize.{k}"] = v
    for k, v in net.state_dict().items():
        state[f"module.attacker.model.{k}"] = v
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30)
    torch.save({"model": state, "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "epoch": 90, "amp": None}, path)
    return path


# --------------------------------------------------------------------------- RobustBench


@pytest.mark.slow
def test_robustbench_wong2020fast_loads_samples_and_evaluates(tmp_path, cifar_npz):
    net = _wong_net()
    model_dir = tmp_path / "zoo"
    path = _save_wong(model_dir, net)
    model, meta = load_classifier(WONG, model_dir=model_dir)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-5)  # same network, same normalisation (inside the architecture)
        assert torch.allclose(model.head(model.features(x)), model(x), atol=1e-6) and model.features(x).shape == (3, 512)
    assert meta["classes"] == list(CIFAR10_CLASSES) and meta["input_shape"] == [3, 32, 32] and meta["dataset"] == "cifar10"
    assert meta["config"] == {"norm": "Linf", "eps": pytest.approx(8 / 255)} and meta["source"] == "robustbench"
    assert meta["weights_sha256"] == sha256_file(path) and meta["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])

    out = tmp_path / "samples"
    summary = _json(_run("sample", "--checkpoint", WONG, "--model-dir", model_dir, "--data", f"npz:{cifar_npz}", "--class", "cat",
                         "--n", 4, "--steps", 2, "--init", "pca", "--stop", "fixed", "--out", out, "--json"))
    assert summary["images"] == 4 and summary["classes"] == [3] and summary["grad_evals_per_image"] == 2
    run_meta = json.loads((out / "meta.json").read_text())
    assert run_meta["checkpoint_sha256"] == sha256_file(path) and run_meta["class_names"] == ["cat"]
    # a RobustBench model as score's feature extractor and judge (robustgen reads it as everywhere else)
    scored = _json(_run("score", out, "--ref", f"npz:{cifar_npz}", "--metrics", "fid", "--features", WONG, "--judge", WONG, "--model-dir", model_dir,
                        "--no-memorisation", "--cache-dir", tmp_path / "score-cache", "--json"))
    assert scored["extractor"]["feature_dim"] == 512 and scored["extractor"]["checkpoint"] == WONG and scored["judge"]["n_samples"] == 4
    assert any("the judge is the classifier that generated the samples" in w for w in scored["warnings"])

    pgd = _json(_run("eval", WONG, "--model-dir", model_dir, "--data", f"npz:{cifar_npz}", "--steps", 2, "--restarts", 1, "--json"))
    assert pgd["n"] == 10 and pgd["eps"] == pytest.approx(8 / 255) and pgd["norm"] == "Linf"
    assert 0 <= pgd["robust_acc"] <= pgd["clean_acc"] <= 1
    aa = _json(_run("eval", "--checkpoint", WONG, "--model-dir", model_dir, "--data", f"npz:{cifar_npz}", "--attack", "apgd-ce",
                    "--steps", 3, "--subset", 8, "--json"))
    assert aa["attack"] == "apgd-ce" and aa["n"] == 8 and aa["within_eps"] and aa["max_perturbation"] <= 8 / 255 + 1e-6
    assert 0 <= aa["robust_acc"] <= aa["clean_acc"] <= 1
    table = _run("eval", WONG, "--model-dir", model_dir, "--data", f"npz:{cifar_npz}", "--attack", "apgd-ce", "--steps", 3, "--subset", 8)
    assert table.exit_code == 0 and "APGD-CE (3 it) acc" in table.stdout and "8/255" in table.stdout and "resumed 1/1" in table.stdout


def test_robustbench_file_of_another_architecture_is_one_line(tmp_path):
    import torchvision

    _robustbench()
    model_dir = tmp_path / "zoo"
    path = model_dir / "cifar10" / "Linf" / "Wong2020Fast.pt"
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    line = assert_one_line_error(_run("eval", WONG, "--model-dir", model_dir, "--eps", "8/255"), str(path), "does not fit RobustBench's Wong2020Fast")
    assert "missing" in line and "drive.google.com" in line


def test_robustbench_unknown_name_lists_close_names(tmp_path):
    _robustbench()
    assert_one_line_error(_run("sample", "--checkpoint", "robustbench:cifar10/Linf/Wong2020Fsat", "--model-dir", tmp_path, "--out", tmp_path / "o"),
                    "unknown RobustBench model 'Wong2020Fsat'", "Wong2020Fast")
    assert_one_line_error(_run("eval", "robustbench:cifar11/Linf/Wong2020Fast"), "unknown RobustBench dataset 'cifar11'", "cifar10")
    assert_one_line_error(_run("eval", "robustbench:cifar10/Wong2020Fast"), "robustbench:DATASET/THREAT/NAME")
    assert not (tmp_path / "o").exists()


def test_robustbench_missing_file_offline_names_path_and_source(tmp_path, monkeypatch):
    from robustgen.kernel.models import robustbench_zoo

    _robustbench()
    calls = []

    def offline(gdrive_id, path):  # what gdown raises here: the name does not resolve
        calls.append(gdrive_id)
        raise ConnectionError("Failed to resolve 'drive.google.com' ([Errno -2] Name or service not known)")

    monkeypatch.setattr(robustbench_zoo, "gdrive_download", offline)
    model_dir = tmp_path / "zoo"
    monkeypatch.setenv("ROBUSTGEN_MODEL_DIR", str(model_dir))  # the environment variable is the default --model-dir
    expected = model_dir / "cifar10" / "Linf" / "Wong2020Fast.pt"
    assert_one_line_error(_run("eval", WONG, "--eps", "8/255"), f"is not at {expected}", f"drive.google.com/uc?id={WONG_GDRIVE}", "no network")
    assert calls == [WONG_GDRIVE] and not model_dir.exists()  # nothing half-written, not even the empty folders the download needed
    with pytest.raises(RobustgenError, match="downloads are off"):
        load_classifier(WONG, download=False)
    assert calls == [WONG_GDRIVE]


def test_robustbench_file_already_there_needs_no_network(tmp_path, monkeypatch):
    from robustgen.kernel.models import robustbench_zoo

    net = _wong_net()
    model_dir = tmp_path / "zoo"
    _save_wong(model_dir, net)
    monkeypatch.setattr(robustbench_zoo, "gdrive_download", lambda *a: pytest.fail("no download when the file is there"))
    monkeypatch.setenv("ROBUSTGEN_MODEL_DIR", str(model_dir))
    model, _ = load_classifier(WONG)
    assert model.num_classes == 10


# --------------------------------------------------------------------------- robustness library (ResNet-50, 224x224)


@pytest.mark.slow
def test_robustness_resnet50_loads_samples_on_an_imagenet_subset_and_evaluates(tmp_path, imagenet_folder):
    net = _resnet50()
    path = _save_robustness(tmp_path / "imagenet_linf_4.pt", net, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    spec = f"robustness:{path}"
    model, meta = load_classifier(spec)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        normalised = (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
        assert torch.allclose(model(x), net(normalised), atol=1e-4)  # module.normalizer.* kept inside the model
        assert torch.allclose(model.head(model.features(x)), model(x), atol=1e-5) and model.feature_dim == 2048
    assert meta["mean"] == pytest.approx([0.5, 0.4, 0.3]) and meta["std"] == pytest.approx([0.2, 0.25, 0.3])
    assert meta["config"] == {"norm": "Linf", "eps": pytest.approx(4 / 255)} and meta["epoch"] == 90  # from the file name / payload
    assert meta["classes"][207] == "golden retriever" and meta["input_shape"] == [3, 224, 224] and meta["dataset"] == "imagenet"

    out = tmp_path / "samples"
    summary = _json(_run("sample", "--checkpoint", spec, "--data", f"folder:{imagenet_folder}", "--n", 2, "--steps", 2, "--init", "uniform",
                         "--stop", "fixed", "--batch-size", 2, "--out", out, "--json"))
    assert summary["images"] == 2 and summary["classes"] == [1, 207]  # the folder's classes, as the model's indices
    assert json.loads((out / "meta.json").read_text())["class_names"] == ["goldfish", "golden retriever"]

    pgd = _json(_run("eval", spec, "--data", f"folder:{imagenet_folder}", "--steps", 1, "--restarts", 1, "--json"))
    assert pgd["n"] == 2 and pgd["eps"] == pytest.approx(4 / 255) and pgd["robust_acc"] <= pgd["clean_acc"]
    aa = _json(_run("eval", spec, "--data", f"folder:{imagenet_folder}", "--attack", "apgd-ce", "--steps", 2, "--json"))
    assert aa["n"] == 2 and aa["within_eps"] and aa["robust_acc"] <= aa["clean_acc"]

    assert_one_line_error(_run("eval", f"robustness:resnet18={path}", "--data", f"folder:{imagenet_folder}"), "does not fit torchvision's resnet18")


def test_robustness_layout_without_normalizer_and_plain_state_dict_errors(tmp_path):
    import torchvision

    net = torchvision.models.resnet18(num_classes=5)
    plain = tmp_path / "plain.pt"
    torch.save(net.state_dict(), plain)
    with pytest.raises(RobustgenError, match="not a robustness-library checkpoint"):
        load_classifier(f"robustness:resnet18={plain}")
    wrapped = tmp_path / "cifar_l2_0_5.pt"
    torch.save({"model": {f"module.model.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, wrapped)
    model, meta = load_classifier(f"robustness:resnet18={wrapped}", data="npz:x.npz")
    assert meta["mean"] == pytest.approx(list(IMAGENET_MEAN)) and "assumed ImageNet" in meta["notes"][0]
    assert meta["config"] == {"norm": "L2", "eps": 0.5} and meta["classes"] == ["0", "1", "2", "3", "4"] and meta["dataset"] == "npz:x.npz"
    assert model.num_classes == 5


# --------------------------------------------------------------------------- torchvision / timm state dicts


def test_torchvision_state_dict_with_mean_std_samples_and_evaluates(tmp_path, imagenet_folder):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(weights=None).eval()
    path = tmp_path / "mnv3.pt"
    torch.save(net.state_dict(), path)
    model, meta = load_classifier(f"torchvision:mobilenet_v3_small={path}")
    assert meta["mean"] == pytest.approx(list(IMAGENET_MEAN)) and any("ImageNet" in note for note in meta["notes"])
    assert meta["classes"][:2] == ["tench", "goldfish"] and meta["input_shape"] == [3, 224, 224]
    x = torch.rand(2, 3, 224, 224)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - mean) / std), atol=1e-4)
        assert torch.allclose(model.head(model.features(x)), model(x), atol=1e-5) and model.feature_dim == 1024
    model, meta = load_classifier(f"torchvision:mobilenet_v3_small={path}", mean="0.5,0.5,0.5", std=[0.25, 0.25, 0.25])
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - 0.5) / 0.25), atol=1e-4)
    assert meta["notes"] == [] and meta["mean"] == [0.5, 0.5, 0.5]

    spec = f"torchvision:mobilenet_v3_small={path}"
    summary = _json(_run("sample", "--checkpoint", spec, "--data", f"folder:{imagenet_folder}", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25",
                         "--class", "golden retriever", "--n", 2, "--steps", 2, "--init", "uniform", "--stop", "fixed", "--out", tmp_path / "s", "--json"))
    assert summary["images"] == 2 and summary["classes"] == [207]  # a class of the model, named, held by the 2-class folder
    result = _json(_run("eval", spec, "--data", f"folder:{imagenet_folder}", "--eps", "2/255", "--steps", 1, "--restarts", 1, "--json"))
    assert result["n"] == 2 and result["eps"] == pytest.approx(2 / 255) and "ImageNet" in result["notes"][0]
    assert_one_line_error(_run("eval", spec, "--data", f"folder:{imagenet_folder}"), "does not record", "--eps")

    assert_one_line_error(_run("eval", f"torchvision:resnet18={path}", "--eps", "1/255"), "does not fit torchvision's resnet18", str(path))
    assert_one_line_error(_run("eval", f"torchvision:resnet5O={path}", "--eps", "1/255"), "unknown torchvision architecture 'resnet5O'", "resnet50")
    assert_one_line_error(_run("eval", f"torchvision:{path}", "--eps", "1/255"), "torchvision:ARCH=PATH")
    assert_one_line_error(_run("eval", str(path), "--eps", "1/255"), "not a robustgen checkpoint", f"torchvision:resnet50={path}")


def test_timm_state_dict_and_safetensors(tmp_path, imagenet_folder):
    timm = pytest.importorskip("timm", reason="timm: specs need the zoo extra")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    net = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=7).eval()
    pt, st = tmp_path / "m.pt", tmp_path / "m.safetensors"
    torch.save(net.state_dict(), pt)
    safetensors_torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, st)
    x = torch.rand(2, 3, 224, 224)
    cfg = net.pretrained_cfg
    expected = net((x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1))
    for path in (pt, st):
        model, meta = load_classifier(f"timm:mobilenetv3_small_050={path}", data="folder:x")
        with torch.no_grad():
            assert torch.allclose(model(x), expected, atol=1e-4)
            assert torch.allclose(model.head(model.features(x)), model(x), atol=1e-5)
        assert meta["classes"] == [str(i) for i in range(7)] and meta["dataset"] == "folder:x" and meta["weights_sha256"] == sha256_file(path)
    assert_one_line_error(_run("eval", f"timm:mobilenetv3_smal_050={pt}", "--eps", "1/255"), "unknown timm architecture", "mobilenetv3_small_050")


# --------------------------------------------------------------------------- files that need unpickling


class _Payload:
    """Unpickling this runs open(marker, "w"): the marker file proves whether code in the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("source", ["robustbench", "robustness", "torchvision"])
def test_file_that_needs_unpickling_is_refused_and_runs_nothing(tmp_path, source):
    marker = tmp_path / "code-ran"
    if source == "robustbench":
        _robustbench()
        path = tmp_path / "zoo" / "cifar10" / "Linf" / "Wong2020Fast.pt"
        path.parent.mkdir(parents=True)
        spec, extra = WONG, ["--model-dir", tmp_path / "zoo"]
    else:
        path = tmp_path / "evil.pt"
        spec, extra = (f"robustness:{path}" if source == "robustness" else f"torchvision:resnet18={path}"), []
    torch.save({"model": _Payload(marker)}, path)
    assert_one_line_error(_run("eval", spec, *extra, "--eps", "8/255"), str(path), "--trust-checkpoint", "not loaded")
    assert_one_line_error(_run("sample", "--checkpoint", spec, *extra, "--out", tmp_path / "o"), "--trust-checkpoint")
    assert not marker.exists() and not (tmp_path / "o").exists()
    if source == "torchvision":  # the flag really unpickles (and the result is then judged as a state dict)
        with pytest.raises(RobustgenError, match="not a state dict"):
            load_classifier(spec, trust_checkpoint=True)
        assert marker.exists()


# --------------------------------------------------------------------------- other one-line errors


def test_unknown_source_missing_package_and_misplaced_options(tmp_path, monkeypatch):
    assert_one_line_error(_run("eval", "hub:resnet50", "--eps", "8/255"), "unknown model source 'hub'", "robustbench:DATASET/THREAT/NAME")
    assert_one_line_error(_run("sample", "--checkpoint", "hub:resnet50"), "unknown model source 'hub'")
    assert_one_line_error(_run("eval", "x.pt", "--attack", "apgd-ce,cw"), "unknown attack cw")
    assert_one_line_error(_run("eval"), "no model given")
    assert_one_line_error(_run("eval", "a.pt", "--checkpoint", "b.pt"), "two models given")
    assert_one_line_error(_run("eval", WONG, "--mean", "0.5,0.5,0.5"), "carries its own normalisation", "--mean/--std do not apply")
    monkeypatch.setitem(sys.modules, "robustbench", None)  # as if the zoo extra were not installed
    assert_one_line_error(_run("eval", WONG, "--model-dir", tmp_path), "pip install 'robustgen[zoo]'")
    monkeypatch.setitem(sys.modules, "timm", None)
    assert_one_line_error(_run("eval", f"timm:resnet50={tmp_path}/w.pt", "--eps", "1/255"), "pip install 'robustgen[zoo]'")


def test_autoattack_without_pyautoattack_is_one_line(robust_digits_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    assert_one_line_error(_run("eval", robust_digits_checkpoint, "--attack", "autoattack", "--subset", 4), "pip install 'robustgen[zoo]'")


def test_align_dataset_maps_folder_classes_onto_model_classes():
    from robustgen.kernel.data import ImageDataset

    x = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    data = ImageDataset("folder:x", x, np.array([0, 1, 2]), x, np.array([2, 1, 0]), ("207", "Golden_Retriever", "tench"), crop_padding=1, flip=True)
    names = imagenet_classes()
    with pytest.raises(RobustgenError, match="two class folders name the same model class"):
        align_dataset(data, {"classes": names})
    data = ImageDataset("folder:x", x, np.array([0, 1, 2]), x, np.array([2, 1, 0]), ("207", "goldfish", "great_white_shark"), crop_padding=1, flip=True)
    aligned = align_dataset(data, {"classes": names})
    assert aligned.num_classes == 1000 and aligned.y_train.tolist() == [207, 1, 2] and aligned.y_test.tolist() == [2, 1, 207]
    assert align_dataset(data, {"classes": ["a", "b", "c"]}) is data  # same number of classes: used as is
    bad = ImageDataset("folder:x", x, np.array([0, 1, 2]), x, np.array([0, 1, 2]), ("207", "goldfsh", "zebra crossing xyz"), crop_padding=1, flip=True)
    with pytest.raises(RobustgenError, match=r"class 'goldfsh' is none of the model's 1000 classes \(close: goldfish"):
        align_dataset(bad, {"classes": names})


# --------------------------------------------------------------------------- AutoAttack state file


def test_autoattack_resumes_finished_chunks_from_its_state_file(robust_digits_checkpoint, tmp_path):
    state = tmp_path / "aa.json"
    args = ["eval", robust_digits_checkpoint, "--attack", "apgd-ce", "--steps", 2, "--subset", 8, "--batch-size", 4, "--eps", "0.1", "--state", state]
    first = _json(_run(*args, "--json"))
    assert first["chunks"] == 2 and first["resumed_chunks"] == 0 and first["n"] == 8 and first["within_eps"]
    saved = json.loads(state.read_text())
    assert sorted(saved["chunks"]) == ["0", "1"]
    chunk1 = sum(saved["chunks"]["1"]["robust"])
    # pretend the run was interrupted after chunk 0, whose images all survived: a resumed run keeps chunk 0 and redoes chunk 1
    saved["chunks"] = {"0": {"clean": [1, 1, 1, 1], "robust": [1, 1, 1, 1], "max_perturbation": 0.0}}
    state.write_text(json.dumps(saved))
    resumed = _json(_run(*args, "--json"))
    assert resumed["resumed_chunks"] == 1 and resumed["robust_acc"] == pytest.approx((4 + chunk1) / 8)  # chunk 1 redone, same seed
    assert sorted(json.loads(state.read_text())["chunks"]) == ["0", "1"]
    assert_one_line_error(_run(*[a if a != "0.1" else "0.2" for a in args]), "belongs to another evaluation", "eps")
