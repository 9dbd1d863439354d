"""No code runs from data files: crafted pickles in every third-party data path and every checkpoint path.

Each crafted file holds an object whose unpickling would write a marker file
(`exec` via `__reduce__`). Every reader must refuse it with one line and leave
no marker behind. The first test proves the payload is live with plain pickle.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from clicheck import assert_one_line_error, invoke

from robustgen.kernel.models.checkpoint import load_checkpoint, read_checkpoint
from robustgen.kernel.data import load_dataset
from robustgen.kernel.errors import RobustgenError


class RunsCode:
    """Unpickling this writes `marker`: what an attacker's file would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "a crafted file ran code"


def test_the_payload_is_live(tmp_path):
    path = tmp_path / "MARKER"
    pickle.loads(pickle.dumps(RunsCode(path)))
    assert path.exists()  # so the other tests' "no marker" means the reader refused it


# --------------------------------------------------------------------------- third-party data


def _cifar_entry(rng, n, label_key, num_classes):
    return {label_key: [int(v) for v in rng.integers(0, num_classes, n)], "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}


def _write_cifar(root: Path, dataset: str, crafted: str, payload) -> None:
    rng = np.random.default_rng(0)
    if dataset == "cifar10":
        base = root / "cifar-10-batches-py"
        files = {f"data_batch_{i}": _cifar_entry(rng, 2, "labels", 10) for i in range(1, 6)}
        files["test_batch"] = _cifar_entry(rng, 2, "labels", 10)
        files["batches.meta"] = {"label_names": [f"c{i}" for i in range(10)]}
    else:
        base = root / "cifar-100-python"
        files = {"train": _cifar_entry(rng, 2, "fine_labels", 100), "test": _cifar_entry(rng, 2, "fine_labels", 100),
                 "meta": {"fine_label_names": [f"c{i}" for i in range(100)]}}
    files[crafted] = {**files[crafted], "data": payload, "label_names": payload, "fine_label_names": payload}
    base.mkdir(parents=True, exist_ok=True)
    for name, entry in files.items():
        (base / name).write_bytes(pickle.dumps(entry, protocol=2))


CIFAR_FILES = [("cifar10", name) for name in ("data_batch_1", "test_batch", "batches.meta")] + [
    ("cifar100", name) for name in ("train", "test", "meta")
]


@pytest.mark.parametrize("dataset, crafted", CIFAR_FILES)
def test_crafted_cifar_file_is_refused_by_the_unpickler(tmp_path, marker, dataset, crafted):
    _write_cifar(tmp_path / "data", dataset, crafted, RunsCode(marker))
    with pytest.raises(RobustgenError, match=rf"{crafted} asks to build (__builtin__|builtins).exec, which a CIFAR batch never holds .*refuses it: delete"):
        load_dataset(dataset, root=tmp_path / "data", download=False, verify=False)  # checksums off: the unpickler alone


@pytest.mark.parametrize("dataset, crafted", CIFAR_FILES)
def test_crafted_cifar_file_through_train_is_one_line(tmp_path, marker, dataset, crafted):
    _write_cifar(tmp_path / "data", dataset, crafted, RunsCode(marker))
    result = invoke(["train", dataset, "--data-root", tmp_path / "data", "--out", tmp_path / "out", "--device", "cpu"])
    assert_one_line_error(result, "is not the published file", "delete")  # checked before anything is unpickled
    assert not (tmp_path / "out").exists()


def test_crafted_npz_dataset_is_refused(tmp_path, marker):
    x = np.zeros((2, 4, 4, 1), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.array([RunsCode(marker)] * 2, dtype=object), x_test=x, y_test=np.zeros(2, int))
    with pytest.raises(RobustgenError, match="holds Python objects"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")
    result = invoke(["train", f"npz:{tmp_path / 'd.npz'}", "--out", tmp_path / "out"])
    assert_one_line_error(result, "holds Python objects")


def test_crafted_tiny_imagenet_cache_is_never_unpickled(tmp_path, marker):
    from PIL import Image

    base = tmp_path / "tiny-imagenet-200"
    (base / "train" / "n0" / "images").mkdir(parents=True)
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("n0\n")
    Image.new("RGB", (8, 8)).save(base / "train" / "n0" / "images" / "a.JPEG")
    Image.new("RGB", (8, 8)).save(base / "val" / "images" / "v.JPEG")
    (base / "val" / "val_annotations.txt").write_text("v.JPEG\tn0\t0\t0\t7\t7\n")
    crafted = np.array([RunsCode(marker)], dtype=object)
    np.savez(base / "robustgen-cache.npz", x_train=crafted, y_train=crafted, x_test=crafted, y_test=crafted)
    data = load_dataset("tiny-imagenet", root=tmp_path, download=False)  # the cache is ignored and rebuilt
    assert data.x_train.shape == (1, 8, 8, 3)


# --------------------------------------------------------------------------- checkpoints


def _crafted_checkpoint(path: Path, marker: Path, *, legacy: bool = False) -> Path:
    payload = {"format": "robustgen-checkpoint", "format_version": 1, "state_dict": {}, "meta": RunsCode(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True])
def test_crafted_checkpoint_is_refused_by_the_kernel(tmp_path, marker, legacy):
    path = _crafted_checkpoint(tmp_path / "evil.pt", marker, legacy=legacy)
    for read in (read_checkpoint, load_checkpoint):
        with pytest.raises(RobustgenError, match="holds Python objects that torch refuses to unpickle"):
            read(path)
    (tmp_path / "raw.pt").write_bytes(pickle.dumps(RunsCode(marker)))  # a bare pickle, no torch container
    with pytest.raises(RobustgenError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "raw.pt")


@pytest.fixture(scope="module")
def samples_npz(tmp_path_factory, digits) -> Path:
    path = tmp_path_factory.mktemp("samples") / "samples.npz"
    np.savez(path, images=digits.x_test[:20], labels=digits.y_test[:20])
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "{evil}"],
        ["sample", "--checkpoint", "{evil}", "--n", "2", "--out", "{out}"],
        ["score", "{samples}", "--ref", "digits", "--features", "{evil}", "--no-per-class", "--out", "{out}/score.json"],
        ["score", "{samples}", "--ref", "digits", "--features", "{good}", "--judge", "{evil}", "--no-per-class", "--out", "{out}/score.json"],
        ["score", "{samples}", "--ref", "digits", "--inception-weights", "{evil}", "--no-per-class", "--out", "{out}/score.json"],
    ],
    ids=["eval", "sample", "score-features", "score-judge", "score-inception-weights"],
)
def test_crafted_checkpoint_through_every_command_is_one_line(tmp_path, marker, samples_npz, robust_digits_checkpoint, argv):
    evil = _crafted_checkpoint(tmp_path / "evil.pt", marker)
    fill = dict(evil=evil, out=tmp_path / "out", samples=samples_npz, good=robust_digits_checkpoint)
    result = invoke([part.format(**fill) for part in argv])
    assert_one_line_error(result, "evil.pt")
    assert not (tmp_path / "out").exists()


def test_crafted_last_pt_on_resume_is_one_line(tmp_path, marker, robust_digits_checkpoint):
    run = tmp_path / "run"
    shutil.copytree(robust_digits_checkpoint.parent, run)
    _crafted_checkpoint(run / "last.pt", marker)
    result = invoke(["train", "--resume", run])
    assert_one_line_error(result, "last.pt", "refuses to unpickle")


def test_crafted_best_pt_in_diagnose_is_one_line(tmp_path, marker, robust_digits_checkpoint):
    run = tmp_path / "run"
    shutil.copytree(robust_digits_checkpoint.parent, run)
    _crafted_checkpoint(run / "best.pt", marker)
    result = invoke(["diagnose", run, "--device", "cpu"])
    assert_one_line_error(result, "best.pt")
