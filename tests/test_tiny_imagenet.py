"""Real Tiny-ImageNet JPEGs (../shared/data/tiny-imagenet-200_val10000.tar): grayscale files in a colour dataset.

A few classes of the real images are laid out as the distributed tiny-imagenet-200/ tree
(tests/tiny_imagenet.py) and as an ImageFolder; every reader must bring the grayscale JPEGs
to the dataset's channel count and say how many it converted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clicheck import assert_one_line_error, invoke
from robustgen.kernel.data import LazyImageFolder, conversion_note, load_dataset
from tiny_imagenet import TAR, build_layout, grayscale_files

CLASSES = ["n03763968", "n02481823", "n02124075"]  # military uniform, chimpanzee (9 grayscale JPEGs between them), Egyptian cat
NAMES = ("military uniform", "chimpanzee", "Egyptian cat")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    if not TAR.is_file():
        pytest.skip(f"{TAR} not present")
    root = tmp_path_factory.mktemp("tiny-imagenet")
    build_layout(root, wnids=CLASSES, train_per_class=40)
    return root


@pytest.fixture(scope="module")
def gray(tiny_root) -> set[Path]:
    found = grayscale_files(tiny_root / "tiny-imagenet-200")
    assert len(found) >= 4  # the chosen classes really hold grayscale JPEGs (else this file tests nothing)
    return found


def _train_files(base: Path) -> list[Path]:
    """Training files in the reader's order: wnids.txt order, then sorted names."""
    return [p for w in CLASSES for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]


def _decoded(path: Path, mode: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert(mode))


def test_tiny_imagenet_reader_converts_the_real_grayscale_jpegs_to_rgb(tiny_root, gray):
    base = tiny_root / "tiny-imagenet-200"
    data = load_dataset("tiny-imagenet", root=tiny_root, download=False)
    assert data.x_train.shape == (120, 64, 64, 3) and data.x_test.shape == (30, 64, 64, 3) and data.classes == NAMES
    assert list(np.bincount(data.y_train)) == [40, 40, 40] and list(np.bincount(data.y_test)) == [10, 10, 10]
    assert data.converted == len(gray)
    assert conversion_note(data).startswith(f"tiny-imagenet: {len(gray)} of 150 images were grayscale and were converted to RGB")
    for row, path in enumerate(_train_files(base)):  # gray files: the decoded luminance in all three channels; colour files as decoded
        expected = np.repeat(_decoded(path, "L")[..., None], 3, -1) if path in gray else _decoded(path, "RGB")
        assert np.array_equal(data.x_train[row], expected), path
    again = load_dataset("tiny-imagenet", root=tiny_root, download=False, channels=3)  # from the cache: the majority was 3
    assert again.converted == data.converted and again.fingerprint() == data.fingerprint()


def test_tiny_imagenet_reader_takes_an_explicit_channel_count(tiny_root, gray):
    data = load_dataset("tiny-imagenet", root=tiny_root, download=False, channels=1)
    assert data.x_train.shape == (120, 64, 64, 1) and data.converted == 150 - len(gray)  # now the colour files are the converted ones
    for row, path in enumerate(_train_files(tiny_root / "tiny-imagenet-200")[:45]):
        assert np.array_equal(data.x_train[row, ..., 0], _decoded(path, "L")), path  # Pillow's luminance, bit for bit
    majority = load_dataset("tiny-imagenet", root=tiny_root, download=False)  # the cache was for channels=1: rebuilt, not reused
    assert majority.image_shape == (3, 64, 64) and majority.converted == len(gray)


@pytest.fixture(scope="module")
def image_folder(tiny_root) -> Path:
    """The same JPEGs as an ImageFolder: train/<wnid>/ and test/<wnid>/ (by val_annotations.txt)."""
    base, folder = tiny_root / "tiny-imagenet-200", tiny_root / "folder"
    for wnid in CLASSES:
        shutil.copytree(base / "train" / wnid / "images", folder / "train" / wnid)
        (folder / "test" / wnid).mkdir(parents=True)
    for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        shutil.copy(base / "val" / "images" / name, folder / "test" / wnid / name)
    return folder


def test_folder_readers_convert_the_real_grayscale_jpegs(image_folder, gray):
    names = {p.name for p in gray}
    whole = load_dataset(f"folder:{image_folder}")
    assert whole.x_train.shape == (120, 64, 64, 3) and whole.x_test.shape == (30, 64, 64, 3) and whole.converted == len(gray)
    lazy = load_dataset(f"folder:{image_folder}", lazy=True)
    assert isinstance(lazy, LazyImageFolder) and lazy.image_shape == (3, 64, 64) and lazy.converted == 0  # nothing decoded yet
    chimp = lazy.class_index("n02481823")  # folder classes are sorted names
    first = lazy.class_images(chimp)
    assert lazy.converted == sum(p.name in names for p in (image_folder / "train" / "n02481823").iterdir()) > 0
    assert np.array_equal(first, whole.x_train[whole.y_train == chimp])  # both readers give the same pixels
    for cls in range(3):
        for split in ("train", "test"):
            if (cls, split) != (chimp, "train"):
                lazy.class_images(cls, split)
    assert lazy.converted == len(gray)


@pytest.mark.slow
def test_train_tiny_imagenet_on_the_real_layout_reports_the_conversions(tiny_root, gray, tmp_path):
    out = tmp_path / "run"
    result = invoke(["train", "tiny-imagenet", "--data-root", tiny_root, "--epochs", "1", "--width", "4", "--batch-size", "40",
                     "--eval-pgd-steps", "1", "--eval-subset", "30", "--co-check-every", "0", "--device", "cpu", "--out", out])
    assert result.exit_code == 0, result.stderr
    assert f"{len(gray)} of 150 images were grayscale and were converted to RGB" in result.stderr
    recorded = json.loads((out / "config.json").read_text())["dataset"]
    assert recorded["converted_images"] == len(gray) and recorded["image_shape"] == [3, 64, 64] and recorded["n_train"] == 120
    evaluated = invoke(["eval", out / "best.pt", "--steps", "1", "--restarts", "1", "--device", "cpu", "--json"])
    assert evaluated.exit_code == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["n"] == 30 and any("converted to RGB" in note for note in report["notes"])


def test_channels_option_is_checked(tiny_root, tmp_path):
    assert_one_line_error(invoke(["train", "tiny-imagenet", "--data-root", tiny_root, "--channels", "2", "--out", tmp_path / "x"]),
                          "Invalid value for '--channels'")
    assert not (tmp_path / "x").exists()
