"""The user's own networks (python:, torchscript:, export:) and published weight layouts, on tiny synthetic nets (offline, fast).

Every layout people publish loads to the same logits; every way a spec can be wrong is one line
through the CLI (missing file, wrong factory, factory not returning a module, key mismatch, wrong
class count, non-finite weights, HTML, a non-pickle never told to use --trust-checkpoint); an export
archive that torch would partly unpickle is refused before torch reads it. The real third-party
files are in test_third_party_models.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings
import zipfile

import numpy as np
import pytest
import torch
from clicheck import assert_one_line_error, invoke
from torch import nn

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.models.sources import load_classifier

NETS = '''
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def small():
    return Small()


def sequential():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def not_a_module():
    return 42


def needs_width(width):
    return Small()


def broken():
    raise ValueError("width must be even")
'''


@pytest.fixture
def nets(tmp_path):
    """nets.py (the user's code), small.pt (its weights), a 10-class 8x8 RGB npz and the reference logits."""
    (tmp_path / "nets.py").write_text(NETS)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        module = importlib.import_module("nets")
        torch.manual_seed(0)
        net = module.small().eval()
        net.bn.running_mean.uniform_(-0.5, 0.5)  # buffers that matter: a load that drops them changes the logits
        sequential = module.sequential().eval()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("nets", None)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save(state, tmp_path / "small.pt")
    torch.save({k: v.clone() for k, v in sequential.state_dict().items()}, tmp_path / "sequential.pt")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", x_train=x[:30], y_train=np.arange(30) % 10, x_test=x[30:], y_test=np.arange(10),
             classes=np.array([f"c{i}" for i in range(10)]))
    probe = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = net(probe)
    return {"dir": tmp_path, "net": net, "state": state, "data": f"npz:{tmp_path / 'data.npz'}", "probe": probe, "logits": logits,
            "spec": f"python:{tmp_path / 'nets.py'}:small={tmp_path / 'small.pt'}"}


def _logits(spec, nets, **options):
    model, meta = load_classifier(spec, data=nets["data"], **options)
    with torch.no_grad():
        return model(nets["probe"]), model, meta


# --------------------------------------------------------------------------- specs


def test_python_file_spec_loads_the_weights_into_the_factory_network(nets):
    logits, model, meta = _logits(nets["spec"], nets)
    assert torch.allclose(logits, nets["logits"], atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model.head(model.features(nets["probe"])), logits, atol=1e-5) and model.feature_dim == 256
    assert meta["source"] == "python" and meta["classes"] == [f"c{i}" for i in range(10)] and meta["input_shape"] == [3, 8, 8]
    assert meta["dataset"] == nets["data"] and "10 classes from" in meta["notes"][0] and "input 3x8x8" in meta["notes"][0]
    assert meta["mean"] is None and "no --mean/--std" in meta["notes"][1]
    # the file is imported under a private name, not as `nets`
    assert "nets" not in sys.modules and any(name.startswith("_robustgen_user_nets_") for name in sys.modules)


def test_mean_std_normalise_inside_the_model(nets):
    logits, _, meta = _logits(nets["spec"], nets, mean="0.5,0.4,0.3", std=[0.2, 0.25, 0.3])
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(logits, nets["net"]((nets["probe"] - mean) / std), atol=1e-5)
    assert meta["mean"] == [0.5, 0.4, 0.3] and len(meta["notes"]) == 1


def test_python_module_spec_imports_from_the_current_directory(nets, monkeypatch):
    package = nets["dir"] / "mylab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(NETS)
    monkeypatch.chdir(nets["dir"])
    monkeypatch.delitem(sys.modules, "mylab", raising=False)
    logits, _, meta = _logits(f"python:mylab.models:small={nets['dir'] / 'small.pt'}", nets)
    assert torch.allclose(logits, nets["logits"], atol=1e-5) and meta["arch"] == "python:mylab.models:small (Small)"
    assert str(nets["dir"]) not in sys.path  # put there only while importing
    sys.modules.pop("mylab.models", None)
    sys.modules.pop("mylab", None)


def test_without_data_the_classes_come_from_the_output_width_and_the_size_is_probed(nets):
    model, meta = load_classifier(nets["spec"])
    assert meta["classes"] == [str(i) for i in range(10)] and meta["input_shape"] == [3, 8, 8]
    assert "from the model's output width" in meta["notes"][0] and "guessed" in meta["notes"][0]
    model, meta = load_classifier(nets["spec"], input_shape=(3, 8, 8))  # the images it will see (score's samples)
    assert "(the images it is used on)" in meta["notes"][0]


def test_torchscript_and_export_programs_give_the_same_logits(nets, tmp_path):
    net, example = nets["net"], torch.rand(2, 3, 8, 8)
    traced, scripted = tmp_path / "traced.ts", tmp_path / "scripted.ts"
    with _quiet_torchscript():
        torch.jit.save(torch.jit.trace(net, example), traced)
        torch.jit.save(torch.jit.script(net), scripted)
    dynamic, fixed = tmp_path / "dynamic.pt2", tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)), dynamic)
    torch.export.save(torch.export.export(net, (torch.rand(4, 3, 8, 8),)), fixed)
    for spec in (f"torchscript:{traced}", f"torchscript:{scripted}", f"export:{dynamic}", f"export:{fixed}"):
        logits, model, meta = _logits(spec, nets)
        assert torch.allclose(logits, nets["logits"], atol=1e-5), spec  # 5 images through a program fixed at batch 4: chunked
        assert meta["classes"][0] == "c0" and meta["input_shape"] == [3, 8, 8]
        x = nets["probe"][:3].clone().requires_grad_(True)
        assert torch.autograd.grad(model(x)[:, 1].sum(), x)[0].abs().sum() > 0  # samplers and attacks need input gradients
        if spec.startswith("export:"):  # an exported program's final linear layer is split off: features for scoring
            with torch.no_grad():
                assert torch.allclose(model.head(model.features(nets["probe"])), logits, atol=1e-5) and model.feature_dim == 256
        else:
            with pytest.raises(RobustgenError, match="no linear head could be split off"):
                model.features(nets["probe"])
    _, meta = load_classifier(f"export:{fixed}")
    assert "(the size the program was exported for)" in meta["notes"][0] and "fixed batch 4" in meta["arch"]


@contextlib.contextmanager
def _quiet_torchscript():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation warnings are torch's, not ours
        yield


# --------------------------------------------------------------------------- published layouts


def _save_cuda_tagged(obj, path, *, legacy=False):
    """torch.save as on a GPU machine: storages tagged cuda:0 (reading them back needs map_location on a CPU host)."""
    import torch.serialization as serialization

    def cuda_tag(storage):
        return "cuda:0"

    serialization.register_package(-100, cuda_tag, lambda obj, location: None)
    try:
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    finally:
        serialization._package_registry[:] = [entry for entry in serialization._package_registry if entry[1] is not cuda_tag]


@pytest.mark.parametrize("layout", ["state_dict", "model", "net", "model_state_dict", "list-of-one", "module-prefix", "model-prefix",
                                    "nested-module-prefix", "legacy", "cuda", "cuda-legacy", "no-num-batches-tracked"])
def test_published_layouts_load_to_the_same_logits(nets, layout):
    state, path = nets["state"], nets["dir"] / f"{layout}.pt"
    payload = {
        "state_dict": {"state_dict": state, "epoch": 90, "best_prec1": 91.8},
        "model": {"model": state, "optimizer": {"lr": 0.1}},
        "net": {"net": state, "acc": 0.5},
        "model_state_dict": {"model_state_dict": state, "epoch": 3},
        "list-of-one": {"state_dict": [state], "acc": 0.6},
        "module-prefix": {f"module.{k}": v for k, v in state.items()},
        "model-prefix": {"state_dict": {f"model.{k}": v for k, v in state.items()}},
        "nested-module-prefix": {"state_dict": {"model": {f"module.model.{k}": v for k, v in state.items()}}},
        "no-num-batches-tracked": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")},  # files from torch < 0.4.1
    }.get(layout, state)
    if layout.startswith("cuda"):
        _save_cuda_tagged(payload, path, legacy=layout == "cuda-legacy")
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)  # the file really is CUDA-tagged
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=layout != "legacy")
    logits, _, _ = _logits(f"python:{nets['dir'] / 'nets.py'}:small={path}", nets)
    assert torch.allclose(logits, nets["logits"], atol=1e-5)


def test_prefixes_are_stripped_only_when_every_key_carries_them_and_the_network_keeps_its_own(tmp_path, nets):
    from robustgen.kernel.models.foreign import state_dict_of

    state = nets["state"]
    mixed = {("module." + k if k.startswith("conv") else k): v for k, v in state.items()}
    assert set(state_dict_of(mixed, source="x")) == set(mixed)  # not every key: untouched
    prefixed = {f"model.{k}": v for k, v in state.items()}
    assert set(state_dict_of(prefixed, source="x")) == set(state)
    assert set(state_dict_of(prefixed, source="x", expected=list(prefixed))) == set(prefixed)  # a network whose own keys start with model.


# --------------------------------------------------------------------------- one line for each way a spec can be wrong


def _eval(spec, nets, *extra):
    return invoke(["eval", spec, "--data", nets["data"], "--eps", "1/255", "--steps", "1", "--restarts", "1", *extra])


def test_each_way_a_python_spec_can_be_wrong_is_one_line(nets):
    d, data = nets["dir"], nets["data"]
    weights = d / "small.pt"
    (d / "syntax.py").write_text("def f(:\n    pass\n")
    cases = [
        (f"python:{d / 'missing.py'}:small={weights}", ("missing.py not found", ".py file")),
        (f"python:{d / 'nets.py'}:small={d / 'missing.pt'}", ("weights file", "missing.pt not found")),
        (f"python:{d / 'nets.py'}:smal={weights}", ("has no factory 'smal'", "did you mean small")),
        (f"python:{d / 'nets.py'}:not_a_module={weights}", ("not_a_module() returned int, not a torch.nn.Module",)),
        (f"python:{d / 'nets.py'}:needs_width={weights}", ("needs_width() needs arguments", "takes none")),
        (f"python:{d / 'nets.py'}:broken={weights}", ("broken() failed", "ValueError: width must be even", "nets.py line")),
        (f"python:{d / 'syntax.py'}:f={weights}", ("cannot import", "SyntaxError")),
        (f"python:nosuchpackage.models:small={weights}", ("no module named 'nosuchpackage'",)),
        (f"python:{d / 'nets.py'}={weights}", ("python:FILE.py:FACTORY=WEIGHTS",)),
        (f"python:{d / 'nets.py'}:sequential={weights}", ("does not fit", "missing: 0.weight, 0.bias, 3.weight", "unexpected: conv.weight, conv.bias, bn.weight, ...")),
    ]
    for spec, fragments in cases:
        assert_one_line_error(_eval(spec, nets), *fragments)
    line = assert_one_line_error(invoke(["sample", "--checkpoint", cases[2][0], "--data", data, "--out", d / "out"]), "has no factory")
    assert "smal" in line and not (d / "out").exists()
    assert_one_line_error(invoke(["inspect", cases[3][0]]), "not a torch.nn.Module")


def test_sequential_numbering_mismatch_says_how_to_number_the_layers(nets):
    d = nets["dir"]
    shifted = {k.replace("3.", "2.", 1) if k.startswith("3.") else k: v for k, v in torch.load(d / "sequential.pt").items()}
    torch.save(shifted, d / "shifted.pt")  # the file's Sequential had no ReLU module in between
    line = assert_one_line_error(_eval(f"python:{d / 'nets.py'}:sequential={d / 'shifted.pt'}", nets), "missing: 3.weight, 3.bias")
    assert "unexpected: 2.weight, 2.bias" in line and "nn.Sequential" in line and "activations count" in line
    logits, _, _ = _logits(f"python:{d / 'nets.py'}:sequential={d / 'sequential.pt'}", nets)  # numeric keys as saved: fine
    assert logits.shape == (5, 10)


def test_wrong_class_count_and_input_size_are_one_line(nets):
    d = nets["dir"]
    rng = np.random.default_rng(0)
    np.savez(d / "five.npz", x_train=rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8), y_train=np.arange(10) % 5,
             x_test=rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8), y_test=np.arange(5))
    np.savez(d / "gray.npz", x_train=rng.integers(0, 256, (10, 8, 8, 1), dtype=np.uint8), y_train=np.arange(10),
             x_test=rng.integers(0, 256, (10, 8, 8, 1), dtype=np.uint8), y_test=np.arange(10))
    assert_one_line_error(invoke(["eval", nets["spec"], "--data", f"npz:{d / 'five.npz'}", "--eps", "1/255"]),
                          "outputs 10 classes but", "has 5", "pass --data with the model's 10 classes")
    assert_one_line_error(invoke(["sample", "--checkpoint", nets["spec"], "--data", f"npz:{d / 'gray.npz'}", "--out", d / "o"]),
                          "cannot take", "1x8x8 images", "expected input")
    assert_one_line_error(invoke(["inspect", nets["spec"], "--mean", "0.5", "--std", "0.5"]), "--mean/--std give 1/1 values for 3-channel images")


def test_non_finite_weights_are_refused_for_every_source(nets, robust_digits_checkpoint, tmp_path):
    bad = {k: v.clone() for k, v in nets["state"].items()}
    bad["fc.weight"][0, 3] = float("nan")
    torch.save(bad, tmp_path / "nan.pt")
    assert_one_line_error(_eval(f"python:{nets['dir'] / 'nets.py'}:small={tmp_path / 'nan.pt'}", nets), "non-finite weights", "NaN or inf in fc.weight")
    payload = torch.load(robust_digits_checkpoint, weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    payload["state_dict"][name].view(-1)[0] = float("inf")
    torch.save(payload, tmp_path / "inf.pt")
    assert_one_line_error(invoke(["eval", tmp_path / "inf.pt", "--eps", "0.1"]), "non-finite weights", f"NaN or inf in {name}", "use a checkpoint from before")
    assert_one_line_error(invoke(["sample", "--checkpoint", tmp_path / "inf.pt", "--out", tmp_path / "o"]), "non-finite weights")
    assert not (tmp_path / "o").exists()


def test_html_page_saved_as_weights_is_recognised_and_no_trust_is_advised_for_a_non_pickle(nets, tmp_path):
    page = tmp_path / "weights.pt"
    page.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>...</body></html>")
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights")
    net_file = nets["dir"] / "nets.py"
    samples = tmp_path / "samples.npz"
    np.savez(samples, images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.arange(4))
    for argv in (["eval", f"python:{net_file}:small={page}", "--eps", "1/255"], ["eval", f"torchscript:{page}"], ["eval", f"export:{page}"],
                 ["eval", f"torchvision:resnet18={page}", "--eps", "1/255"], ["eval", page],
                 ["score", samples, "--ref", nets["data"], "--features", page], ["score", samples, "--ref", nets["data"], "--metrics", "fid", "--features", nets["spec"], "--judge", page]):
        line = assert_one_line_error(invoke(argv), "is an HTML page", "download the file itself again")
        assert "--trust-checkpoint" not in line
    line = assert_one_line_error(_eval(f"python:{net_file}:small={text}", nets), "not a PyTorch weights file")
    assert "--trust-checkpoint" not in line
    (tmp_path / "empty.pt").write_bytes(b"")
    assert_one_line_error(_eval(f"python:{net_file}:small={tmp_path / 'empty.pt'}", nets), "is empty")


def test_files_of_the_wrong_kind_say_which_spec_reads_them(nets, tmp_path):
    weights = nets["dir"] / "small.pt"
    assert_one_line_error(invoke(["inspect", f"torchscript:{weights}"]), "is a torch.save file, not TorchScript", "python:FILE.py:FACTORY=")
    assert_one_line_error(invoke(["inspect", f"export:{weights}"]), "is a torch.save file", "not a torch.export program")
    scripted = tmp_path / "m.ts"
    with _quiet_torchscript():
        torch.jit.save(torch.jit.script(nets["net"]), scripted)
    assert_one_line_error(invoke(["inspect", f"export:{scripted}"]), "is a TorchScript archive", f"torchscript:{scripted}")
    assert_one_line_error(_eval(f"python:{nets['dir'] / 'nets.py'}:small={scripted}", nets), "TorchScript or torch.export archive", f"torchscript:{scripted}")


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def test_export_archive_that_torch_would_unpickle_is_refused_before_torch_reads_it(nets, tmp_path):
    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(nets["net"], (torch.rand(2, 3, 8, 8),)), good)
    marker = tmp_path / "MARKER"
    crafted = tmp_path / "crafted.pt2"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(crafted, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if "/sample_inputs/" in item.filename:  # torch retries this member with weights_only=False
                buffer = io.BytesIO()
                torch.save({"inputs": _RunsCode(marker)}, buffer)
                data = buffer.getvalue()
            target.writestr(item, data)
    line = assert_one_line_error(invoke(["inspect", f"export:{crafted}"]), "sample_inputs", "pickled Python objects", "--trust-checkpoint")
    assert "crafted.pt2" in line and not marker.exists()
    pickled = tmp_path / "pickled.pt2"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(pickled, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith("weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            target.writestr(item, data)
    assert_one_line_error(invoke(["inspect", f"export:{pickled}"]), "stored as a pickled object", "--trust-checkpoint")
    _, meta = load_classifier(f"export:{good}")  # the untouched archive loads
    assert meta["source"] == "export" and not marker.exists()


# --------------------------------------------------------------------------- robustgen inspect


def test_inspect_reports_what_the_loader_understood_and_clean_accuracy(nets):
    from robustgen.kernel.data import load_dataset
    from robustgen.kernel.io import sha256_file
    from robustgen.kernel.models.inspection import clean_accuracy

    result = invoke(["inspect", nets["spec"], "--data", nets["data"], "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["source"] == "python" and info["parameters"] == sum(p.numel() for p in nets["net"].parameters())
    assert info["input_shape"] == [3, 8, 8] and info["num_classes"] == 10 and info["weights_sha256"] == sha256_file(nets["dir"] / "small.pt")
    model, _ = load_classifier(nets["spec"], data=nets["data"])
    data = load_dataset(nets["data"])
    assert info["n"] == 10 and info["clean_acc"] == clean_accuracy(model, data.x_test, data.y_test)  # all 10 test images
    table = invoke(["inspect", nets["spec"]])
    assert table.exit_code == 0 and f"parameters      {info['parameters']:,}" in table.stdout and "guessed" in table.stdout
    assert "clean accuracy" not in table.stdout


def test_inspect_a_robustgen_checkpoint(robust_digits_checkpoint, digits):
    from robustgen.kernel.models.checkpoint import load_checkpoint
    from robustgen.kernel.models.inspection import clean_accuracy

    result = invoke(["inspect", robust_digits_checkpoint, "--data", "digits", "--images", "1000", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    model, _ = load_checkpoint(robust_digits_checkpoint)
    assert info["source"] == "robustgen" and info["input_shape"] == [1, 8, 8] and info["n"] == 360
    assert info["clean_acc"] == clean_accuracy(model, digits.x_test, digits.y_test)
    assert info["threat"]["norm"] == "Linf" and info["threat"]["eps"] == pytest.approx(0.1) and info["normalised_inside"]


def test_inspect_clean_accuracy_is_eval_s_on_the_same_subset(robust_digits_checkpoint):
    info = json.loads(invoke(["inspect", robust_digits_checkpoint, "--data", "digits", "--images", "50", "--seed", "3", "--json"]).stdout)
    evaluated = invoke(["eval", robust_digits_checkpoint, "--subset", "50", "--seed", "3", "--steps", "0", "--restarts", "1", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert info["n"] == 50 and info["clean_acc"] == json.loads(evaluated.stdout)["clean_acc"]


def test_score_takes_program_specs_as_features_and_judge(nets, tmp_path):
    from samplers.scoring import score

    net = nets["net"]
    torch.export.save(torch.export.export(net, (torch.rand(2, 3, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},)), tmp_path / "m.pt2")
    with _quiet_torchscript():
        torch.jit.save(torch.jit.script(net), tmp_path / "m.ts")
    data = np.load(nets["dir"] / "data.npz")
    images, labels = data["x_train"], data["y_train"]
    python = score(images, labels=labels, ref=nets["data"], features=nets["spec"], judge=nets["spec"], metrics=("fid",), per_class=False,
                   memorisation=False, cache=False, device="cpu")
    exported = score(images, labels=labels, ref=nets["data"], features=f"export:{tmp_path / 'm.pt2'}", judge=f"torchscript:{tmp_path / 'm.ts'}",
                     metrics=("fid",), per_class=False, memorisation=False, cache=False, device="cpu")
    assert exported.metrics["fid"] == pytest.approx(python.metrics["fid"], rel=1e-4)  # same network, same features
    assert exported.metrics["judge_accuracy"] == python.metrics["judge_accuracy"] and exported.extractor.feature_dim == 256
    samples = tmp_path / "samples.npz"
    np.savez(samples, images=images, labels=labels)
    assert_one_line_error(invoke(["score", samples, "--ref", nets["data"], "--metrics", "fid", "--features", f"torchscript:{tmp_path / 'm.ts'}"]),
                          "no linear head could be split off", "python:FILE.py:FACTORY=WEIGHTS")
