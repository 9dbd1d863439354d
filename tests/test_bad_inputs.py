"""Every bad input gets ONE line: table-driven CLI cases through `robustgen.cli.main`.

Each case asserts the exit code, exactly one `Error: ...` line on stderr naming the
problem and the fix, no traceback, and that nothing was written or left behind (the
inputs, the would-be --out, and the cache dir are snapshotted before and after).
The bad files are built once per session; the one real checkpoint is conftest's.

Started with the kernel and data cases (datasets, checkpoints, click usage, demo,
cache); command owners add their rows to CASES.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import click
import numpy as np
import pytest
import torch
from clicheck import assert_one_line_error, invoke, runner, snapshot


class Case(NamedTuple):
    id: str
    argv: list[str]  # {bad} session dir of bad files, {ckpt} the tiny checkpoint, {run} its training run dir, {out} a fresh path, {samples} an .npz of images
    fragments: tuple[str, ...]  # must appear in the error line
    env: dict | None = None  # extra environment ({bad} is filled in)
    exit_code: int = 1


def npz(name, *fragments, cmd="train"):
    if cmd == "train":
        argv = ["train", f"npz:{{bad}}/{name}", "--out", "{out}", "--device", "cpu"]
    elif cmd == "score":
        argv = ["score", "{samples}", "--ref", f"npz:{{bad}}/{name}", "--features", "{ckpt}", "--out", "{out}/score.json"]
    else:  # sample with --dataset
        argv = ["sample", "--checkpoint", "{ckpt}", "--dataset", f"npz:{{bad}}/{name}", "--out", "{out}"]
    return Case(f"{cmd}-npz-{name}", argv, fragments)


def ckpt(cmd, name, *fragments):
    argv = {
        "eval": ["eval", f"{{bad}}/{name}"],
        "sample": ["sample", "--checkpoint", f"{{bad}}/{name}", "--n", "2", "--out", "{out}"],
        "features": ["score", "{samples}", "--ref", "digits", "--features", f"{{bad}}/{name}", "--no-per-class", "--out", "{out}/score.json"],
        "judge": ["score", "{samples}", "--ref", "digits", "--features", "{ckpt}", "--judge", f"{{bad}}/{name}", "--no-per-class", "--out", "{out}/score.json"],
    }[cmd]
    return Case(f"{cmd}-ckpt-{name}", argv, fragments)


def usage(id, argv, *fragments):
    return Case(f"usage-{id}", argv, fragments)


CASES = [
    # ---- npz datasets
    npz("empty-train.npz", "x_train holds no images", "at least one train and one test image"),
    npz("empty-test.npz", "x_test holds no images"),
    npz("truncated.npz", "truncated or damaged", "numpy.savez"),
    npz("text.npz", "is not an .npz file", "numpy.savez"),
    npz("array.npy", "single .npy array, not an .npz"),
    npz("float-labels.npz", "non-integer labels", "2.5", "integers 0..K-1"),
    npz("nan-labels.npz", "non-integer labels", "nan"),
    npz("labels-5-14.npz", "labels run 5..14", "0, 1, 2, 3, 4 never occur", "add a classes array"),
    npz("object.npz", "holds Python objects", "store numeric arrays"),
    npz("missing.npz", "not found", "npz:PATH"),
    npz("a-dir.npz", "is a directory"),
    npz("float-images.npz", "store images as uint8"),
    npz("four-channels.npz", "expected (N, H, W, C) with C = 1 or 3"),
    npz("count-mismatch.npz", "store one class index per image"),
    npz("one-hot.npz", "one-hot labels: use y.argmax(1)"),
    npz("negative-labels.npz", "labels are class indices 0..K-1"),
    npz("string-labels.npz", "store class indices as integers"),
    npz("short-classes.npz", "labels go up to 2 but classes names only 2 classes"),
    npz("duplicate-classes.npz", "appears twice", "distinct name"),
    npz("partial.npz", "missing arrays x_test, y_test"),
    npz("size-mismatch.npz", "store both splits at one size"),
    npz("zero-size.npz", "at least 1x1 pixels"),
    npz("text.npz", "is not an .npz file", cmd="score"),
    npz("empty-test.npz", "x_test holds no images", cmd="sample"),
    npz("labels-5-14.npz", "never occur", cmd="sample"),
    npz("train-5-14-test-0-9.npz", "y_test holds classes 0, 1, 2, 3, 4 that y_train never has", "train labels run 5..14", "same class indices"),
    # ---- samples to score: every npz read goes through the one safe reader (issue 23)
    *[Case(f"score-samples-{name}{'-json' if json_flag else ''}", ["score", f"{{bad}}/{name}", "--ref", "digits", "--features", "{ckpt}", "--out", "{out}/s.json", *json_flag],
           fragments) for json_flag in ([], ["--json"]) for name, fragments in (
        ("samples-truncated.npz", ("samples:", "truncated or damaged", "numpy.savez")),
        ("samples-run-truncated", ("samples:", "samples.npz", "truncated or damaged")),
        ("samples-npy-renamed.npz", ("samples:", "single .npy array, not an .npz")),
        ("text.npz", ("samples:", "is not an .npz file")))],
    # ---- image folders
    Case("folder-missing", ["train", "folder:{bad}/no-such-folder", "--out", "{out}"], ("is not a directory", "train/ and test/")),
    Case("folder-empty", ["train", "folder:{bad}/folder-empty", "--out", "{out}"], ("expected", "train/<class>/")),
    Case("folder-no-classes", ["train", "folder:{bad}/folder-no-classes", "--out", "{out}"], ("holds no class folders",)),
    Case("folder-unknown-class", ["train", "folder:{bad}/folder-unknown-class", "--out", "{out}"], ("class folders not in train/: zebra",)),
    Case("folder-corrupt", ["train", "folder:{bad}/folder-corrupt", "--out", "{out}"], ("not a readable image", "convert it to PNG/JPEG")),
    Case("folder-eps", ["train", "folder:{bad}/folder-eps", "--out", "{out}"], ("not a readable image",)),
    Case("folder-big", ["train", "folder:{bad}/folder-big", "--out", "{out}"], ("larger than robustgen decodes", "resize it")),
    Case("folder-mixed", ["train", "folder:{bad}/folder-mixed", "--out", "{out}"], ("resize all images to one size",)),
    # ---- downloaded datasets already on disk
    Case("cifar10-junk-batch", ["train", "cifar10", "--data-root", "{bad}/cifar10-junk", "--out", "{out}"], ("data_batch_1 is not the published file", "delete")),
    Case("cifar10-missing-batch", ["train", "cifar10", "--data-root", "{bad}/cifar10-partial", "--out", "{out}"], ("data_batch_2 is missing", "delete")),
    Case("cifar100-junk", ["train", "cifar100", "--data-root", "{bad}/cifar100-junk", "--out", "{out}"], ("is not the published file",)),
    Case("svhn-junk", ["train", "svhn", "--data-root", "{bad}/svhn-junk", "--out", "{out}"], ("train_32x32.mat is not the published file",)),
    Case("data-root-is-a-file", ["train", "cifar10", "--data-root", "{bad}/a-file", "--out", "{out}"], ("is a file", "--data-root")),
    Case("unknown-dataset", ["train", "cifar11", "--out", "{out}"], ("unknown dataset 'cifar11'", "npz:PATH")),
    # ---- checkpoints
    ckpt("eval", "no-meta.pt", "has no meta"),
    ckpt("eval", "wrong-arch.pt", "names architecture 'resnet9000'", "known: preact-resnet18"),
    ckpt("eval", "bad-arch-args.pt", "cannot build preact-resnet18 from its arch_args", "unexpected keyword"),
    ckpt("eval", "arch-args-list.pt", "arch_args is not a dict"),
    ckpt("eval", "bad-input-shape.pt", "input_shape is not [C, H, W]"),
    ckpt("eval", "no-state-dict.pt", "no state_dict"),
    ckpt("eval", "plain-weights.pt", "not a robustgen checkpoint"),
    ckpt("eval", "junk.pt", "cannot read checkpoint", "corrupt"),
    ckpt("eval", "truncated.pt", "cannot read checkpoint"),
    ckpt("eval", "missing.pt", "not found"),
    ckpt("eval", "run-dir", "is a directory", "best.pt"),
    ckpt("sample", "no-meta.pt", "has no meta"),
    ckpt("sample", "wrong-arch.pt", "does not know"),
    ckpt("sample", "bad-arch-args.pt", "cannot build"),
    ckpt("sample", "junk.pt", "cannot read checkpoint"),
    ckpt("features", "no-meta.pt", "has no meta"),
    ckpt("features", "wrong-arch.pt", "does not know"),
    ckpt("features", "bad-arch-args.pt", "cannot build"),
    ckpt("features", "run-dir", "is a directory"),
    ckpt("judge", "wrong-arch.pt", "does not know"),
    ckpt("judge", "bad-arch-args.pt", "cannot build"),
    # ---- click's own usage errors: one line, exit 1, pointing at --help
    usage("train-bad-int", ["train", "--batch-size", "x"], "Invalid value for '--batch-size'", "see robustgen train --help"),
    usage("train-unknown-option", ["train", "--epz", "1"], "No such option '--epz'", "see robustgen train --help"),
    usage("train-option-needs-value", ["train", "--eps"], "requires an argument", "see robustgen train --help"),
    usage("train-extra-argument", ["train", "digits", "extra"], "unexpected extra argument", "see robustgen train --help"),
    usage("diagnose-bad-int", ["diagnose", "run", "--n", "x"], "Invalid value for '--num-images'", "see robustgen diagnose --help"),
    usage("eval-bad-int", ["eval", "x.pt", "--steps", "many"], "Invalid value for '--steps'", "see robustgen eval --help"),
    usage("diagnose-missing-argument", ["diagnose"], "Missing argument", "see robustgen diagnose --help"),
    usage("sample-missing-checkpoint", ["sample"], "Missing option '--checkpoint'", "see robustgen sample --help"),
    usage("sample-bad-choice", ["sample", "--checkpoint", "x.pt", "--init", "nope"], "Invalid value for '--init'", "see robustgen sample --help"),
    usage("sample-bad-eps", ["sample", "--checkpoint", "x.pt", "--eps", "2/0"], "divides by zero", "see robustgen sample --help"),
    usage("sample-bad-n", ["sample", "--checkpoint", "x.pt", "--n", "many"], "Invalid value for '--num-images'"),
    usage("score-missing-argument", ["score"], "Missing argument 'SAMPLES'", "see robustgen score --help"),
    usage("score-zero-batch", ["score", "x", "--batch-size", "0"], "Invalid value for '--batch-size'", "see robustgen score --help"),
    usage("demo-zero-samples", ["demo", "--samples-per-class", "0", "--out", "{out}"], "Invalid value for '--samples-per-class'", "see robustgen demo --help"),
    usage("demo-bad-seed", ["demo", "--seed", "x", "--out", "{out}"], "Invalid value for '--seed'"),
    usage("report-missing-argument", ["report"], "Missing argument", "see robustgen report --help"),
    usage("report-file-argument", ["report", "{bad}/a-file"], "is a file", "see robustgen report --help"),
    usage("unknown-command", ["trian"], "No such command 'trian'", "see robustgen --help"),
    usage("unknown-group-option", ["--bogus"], "No such option '--bogus'", "see robustgen --help"),
    # ---- demo
    Case("demo-resume-and-overwrite", ["demo", "--resume", "--overwrite", "--out", "{out}"], ("--resume and --overwrite contradict",)),
    Case("demo-resume-nothing", ["demo", "--resume", "--out", "{out}"], ("holds no demo", "drop --resume")),
    Case("demo-resume-other-files", ["demo", "--resume", "--out", "{bad}/other-files"], ("holds no demo",)),
    Case("demo-out-other-files", ["demo", "--out", "{bad}/other-files"], ("not a robustgen demo", "choose another --out")),
    Case("demo-overwrite-other-files", ["demo", "--overwrite", "--out", "{bad}/other-files"], ("not a robustgen demo",)),
    Case("demo-out-is-a-file", ["demo", "--out", "{bad}/a-file"], ("is a file", "--out")),
    # ---- non-finite numbers (issue 20): every float option, before any work is done
    *[Case(f"eval-{flag[2:]}-{value}{'-' + extra[-1] if extra else ''}", ["eval", "{ckpt}", flag, value, *extra], ("not", value))
      for flag, value, extra in (("--eps", "nan", []), ("--eps", "inf", []), ("--eps", "1e999", []), ("--step-size", "nan", []),
                                 ("--eps", "inf", ["--norm", "L2"]))],
    *[Case(f"sample-{flag[2:]}-{value}", ["sample", "--checkpoint", "{ckpt}", flag, value, "--out", "{out}"], (f"{flag} {value!r} is not a finite number",))
      for flag, value in (("--step-size", "nan"), ("--step-size", "inf"), ("--noise", "nan"), ("--scale", "nan"), ("--drift", "nan"),
                          ("--momentum", "inf"), ("--quantile", "nan"), ("--marginal-quantile", "-inf"), ("--variance", "nan"))],
    *[Case(f"train-{flag[2:]}-{value}", ["train", "digits", flag, value, "--out", "{out}"], (f"{flag} {value!r} is not a finite number",))
      for flag, value in (("--der-beta", "inf"), ("--der-gamma", "nan"), ("--lr", "nan"), ("--momentum", "inf"), ("--weight-decay", "nan"))],
    Case("train-eps-nan", ["train", "digits", "--eps", "nan", "--out", "{out}"], ("cannot read --eps 'nan'",)),
    usage("train-channels-2", ["train", "digits", "--channels", "2", "--out", "{out}"], "Invalid value for '--channels'", "see robustgen train --help"),
    *[Case(f"sweep-values-{value}", ["sweep", "--checkpoint", "{ckpt}", "--features", "{ckpt}", "--knob", knob, "--values", f"1,{value}", "--out", "{out}"],
           ("--values: " + knob, "is not a finite number"))
      for knob, value in (("scale", "nan"), ("step_size", "inf"))],
    # ---- weights holding NaN or inf: refused by every reader
    ckpt("eval", "nan-weights.pt", "holds non-finite weights", "NaN or inf in"),
    ckpt("eval", "inf-weights.pt", "holds non-finite weights"),
    ckpt("sample", "nan-weights.pt", "holds non-finite weights"),
    ckpt("features", "inf-weights.pt", "holds non-finite weights"),
    ckpt("judge", "nan-weights.pt", "holds non-finite weights"),
    # ---- --out through a loop of symbolic links (loop-a -> loop-b -> loop-a)
    Case("train-out-symlink-loop", ["train", "digits", "--out", "{bad}/loop-a", "--device", "cpu"], ("loop of symbolic links",)),
    Case("train-out-under-symlink-loop", ["train", "digits", "--out", "{bad}/loop-a/run", "--device", "cpu"], ("loop of symbolic links",)),
    Case("sample-out-symlink-loop", ["sample", "--checkpoint", "{ckpt}", "--n", "2", "--out", "{bad}/loop-a"], ("loop of symbolic links",)),
    Case("score-out-symlink-loop", ["score", "{samples}", "--ref", "digits", "--features", "{ckpt}", "--out", "{bad}/loop-a"], ("loop of symbolic links",)),
    Case("score-out-under-symlink-loop", ["score", "{samples}", "--ref", "digits", "--features", "{ckpt}", "--out", "{bad}/loop-b/score.json"],
         ("loop of symbolic links",)),
    # ---- half-done work: everything is read and checked before the first file is written
    Case("report-second-dir-bad", ["report", "{run}", "{bad}/other-files"], ("holds no robustgen run",)),
    Case("sweep-bad-features", ["sweep", "--checkpoint", "{ckpt}", "--features", "{bad}/junk.pt", "--knob", "steps", "--values", "1", "-n", "2", "--out", "{out}"],
         ("cannot read checkpoint",)),
    Case("sweep-missing-judge", ["sweep", "--checkpoint", "{ckpt}", "--features", "{ckpt}", "--judge", "{bad}/missing.pt", "--knob", "steps", "--values", "1",
                                 "-n", "2", "--out", "{out}"], ("--judge", "missing.pt", "no such checkpoint")),
    Case("sweep-nan-judge", ["sweep", "--checkpoint", "{ckpt}", "--features", "{ckpt}", "--judge", "{bad}/nan-weights.pt", "--knob", "steps", "--values", "1",
                             "-n", "2", "--out", "{out}"], ("holds non-finite weights",)),
    # ---- silently accepted before
    Case("train-empty-out", ["train", "digits", "--out", ""], ("--out is empty",)),
    Case("eval-state-with-pgd", ["eval", "{ckpt}", "--state", "{out}/aa.json"], ("--state is AutoAttack's resume file", "--attack autoattack")),
    Case("train-der-start-at-the-end", ["train", "digits", "--method", "pgd", "--steps", "2", "--der", "--der-start", "4", "--epochs", "4", "--out", "{out}"],
         ("--der-start 4 is not before the last epoch", "DER would never run")),
    # ---- cache
    Case("sample-cache-unwritable", ["sample", "--checkpoint", "{ckpt}", "--n", "2", "--out", "{out}", "--device", "cpu"],
         ("robustgen cache", "set ROBUSTGEN_CACHE"), env={"ROBUSTGEN_CACHE": "{bad}/a-file"}),
    Case("score-cache-unwritable", ["score", "{samples}", "--ref", "digits", "--features", "{ckpt}", "--no-per-class", "--out", "{out}/score.json"],
         ("cache", "ROBUSTGEN_CACHE"), env={"ROBUSTGEN_CACHE": "{bad}/a-file"}),
]


# --------------------------------------------------------------------------- the bad files, built once


def _save(path: Path, **arrays) -> None:
    np.savez(path, **arrays)


def _write_npz_cases(bad: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    good = dict(x_train=x, y_train=y, x_test=x[:3], y_test=y[:3])
    _save(bad / "empty-train.npz", **{**good, "x_train": x[:0], "y_train": y[:0]})
    _save(bad / "empty-test.npz", **{**good, "x_test": x[:0], "y_test": y[:0]})
    _save(bad / "whole.npz", **good)
    (bad / "truncated.npz").write_bytes((bad / "whole.npz").read_bytes()[:300])
    (bad / "text.npz").write_text("x_train,y_train\n1,2\n")
    np.save(bad / "array.npy", x)
    _save(bad / "float-labels.npz", **{**good, "y_train": np.array([0, 1, 2.5, 0, 1, 2])})
    _save(bad / "nan-labels.npz", **{**good, "y_test": np.array([0, np.nan, 1])})
    _save(bad / "labels-5-14.npz", x_train=np.repeat(x, 2, 0)[:10], y_train=np.arange(5, 15), x_test=x[:2], y_test=np.array([5, 14]))
    np.savez(bad / "object.npz", **{**good, "y_train": np.array([0, "a", None, 1, 2, 0], dtype=object)})
    (bad / "a-dir.npz").mkdir()
    _save(bad / "float-images.npz", **{**good, "x_train": x / 255.0})
    _save(bad / "four-channels.npz", **{**good, "x_train": np.repeat(x, 4, -1)})
    _save(bad / "count-mismatch.npz", **{**good, "y_train": y[:4]})
    _save(bad / "one-hot.npz", **{**good, "y_train": np.eye(3)[y]})
    _save(bad / "negative-labels.npz", **{**good, "y_train": y - 1})
    _save(bad / "string-labels.npz", **{**good, "y_train": np.array(["a", "b", "c", "a", "b", "c"])})
    _save(bad / "short-classes.npz", **good, classes=np.array(["a", "b"]))
    _save(bad / "duplicate-classes.npz", **good, classes=np.array(["a", "b", "a"]))
    _save(bad / "partial.npz", x_train=x, y_train=y)
    _save(bad / "size-mismatch.npz", **{**good, "x_test": rng.integers(0, 256, (3, 6, 6, 1), dtype=np.uint8)})
    _save(bad / "zero-size.npz", **{**good, "x_train": np.zeros((6, 0, 0, 1), np.uint8), "x_test": np.zeros((3, 0, 0, 1), np.uint8)})
    xs = rng.integers(0, 256, (10, 8, 8, 1), dtype=np.uint8)
    _save(bad / "train-5-14-test-0-9.npz", x_train=xs, y_train=np.arange(5, 15), x_test=xs, y_test=np.arange(10))
    _save(bad / "samples-whole.npz", images=xs, labels=np.arange(10))
    (bad / "samples-truncated.npz").write_bytes((bad / "samples-whole.npz").read_bytes()[:300])
    (bad / "samples-run-truncated").mkdir()
    (bad / "samples-run-truncated" / "samples.npz").write_bytes((bad / "samples-whole.npz").read_bytes()[:300])
    (bad / "samples-run-truncated" / "meta.json").write_text('{"classes": ["0"]}')
    np.save(bad / "samples-npy.npy", xs)
    (bad / "samples-npy.npy").rename(bad / "samples-npy-renamed.npz")


def _write_folder_cases(bad: Path) -> None:
    from PIL import Image

    from test_data import _png_header_only

    def folder(name, files):
        for rel, make in files.items():
            path = bad / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            make(path)

    def png(size=(8, 8)):
        return lambda p: Image.new("RGB", size, (1, 2, 3)).save(p)

    (bad / "folder-empty").mkdir()
    (bad / "folder-no-classes" / "train").mkdir(parents=True)
    (bad / "folder-no-classes" / "test").mkdir(parents=True)
    folder("folder-unknown-class", {"train/cat/a.png": png(), "test/zebra/a.png": png()})
    folder("folder-corrupt", {"train/cat/a.png": lambda p: p.write_bytes(b"junk"), "test/cat/a.png": png()})
    folder("folder-eps", {"train/cat/a.png": lambda p: p.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"), "test/cat/a.png": png()})
    folder("folder-big", {"train/cat/a.png": lambda p: _png_header_only(p, 5000, 5000), "test/cat/a.png": png()})
    folder("folder-mixed", {"train/cat/a.png": png(), "train/cat/b.png": png((9, 8)), "test/cat/a.png": png()})


def _write_dataset_roots(bad: Path) -> None:
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        for root in ("cifar10-junk", "cifar10-partial"):
            (bad / root / "cifar-10-batches-py").mkdir(parents=True, exist_ok=True)
            (bad / root / "cifar-10-batches-py" / name).write_bytes(b"junk")
    (bad / "cifar10-partial" / "cifar-10-batches-py" / "data_batch_2").unlink()
    (bad / "cifar100-junk" / "cifar-100-python").mkdir(parents=True)
    for name in ("train", "test", "meta"):
        (bad / "cifar100-junk" / "cifar-100-python" / name).write_bytes(b"junk")
    (bad / "svhn-junk").mkdir()
    for split in ("train", "test"):
        (bad / "svhn-junk" / f"{split}_32x32.mat").write_bytes(b"junk")


def _write_checkpoint_cases(bad: Path, good: Path) -> None:
    def edited(name, edit):
        payload = torch.load(good, weights_only=True)
        edit(payload)
        torch.save(payload, bad / name)

    edited("no-meta.pt", lambda p: p.pop("meta"))
    edited("wrong-arch.pt", lambda p: p["meta"].update(arch="resnet9000"))
    edited("bad-arch-args.pt", lambda p: p["meta"]["arch_args"].update(bogus=1))
    edited("arch-args-list.pt", lambda p: p["meta"].update(arch_args=[8]))
    edited("bad-input-shape.pt", lambda p: p["meta"].update(input_shape="1x8x8"))
    edited("no-state-dict.pt", lambda p: p.pop("state_dict"))
    edited("nan-weights.pt", lambda p: next(v for k, v in p["state_dict"].items() if k.endswith("conv1.weight")).view(-1)[0:1].fill_(float("nan")))
    edited("inf-weights.pt", lambda p: p["state_dict"]["head.weight"].view(-1)[-1:].fill_(float("inf")))
    torch.save({"weight": torch.zeros(3)}, bad / "plain-weights.pt")
    (bad / "junk.pt").write_bytes(b"not a checkpoint")
    (bad / "truncated.pt").write_bytes(good.read_bytes()[:1000])
    (bad / "run-dir").mkdir()
    (bad / "run-dir" / "best.pt").write_bytes(good.read_bytes())


@pytest.fixture(scope="session")
def bad(tmp_path_factory, robust_digits_checkpoint, digits) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    _write_npz_cases(root)
    _write_folder_cases(root)
    _write_dataset_roots(root)
    _write_checkpoint_cases(root, robust_digits_checkpoint)
    (root / "a-file").write_text("not a directory\n")
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    (root / "other-files").mkdir()
    (root / "other-files" / "thesis.tex").write_text("precious\n")
    np.savez(root / "samples.npz", images=digits.x_test[:20], labels=digits.y_test[:20])
    return root


# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id) for c in CASES]
)
def test_bad_input_gives_one_line_and_leaves_nothing(case, bad, robust_digits_checkpoint, tmp_path):
    """One Error: line on stderr, nothing written; with --json, the same message as JSON on stdout and nothing else."""
    fill = dict(bad=bad, ckpt=robust_digits_checkpoint, run=robust_digits_checkpoint.parent, out=tmp_path / "out", samples=bad / "samples.npz")
    argv = [part.format(**fill) for part in case.argv]
    env = {k: v.format(**fill) for k, v in (case.env or {}).items()}
    watched = (bad, tmp_path, robust_digits_checkpoint.parent, Path(os.environ["ROBUSTGEN_CACHE"]))
    before = snapshot(*watched)
    result = invoke(argv, env=env)
    line = assert_one_line_error(result, *case.fragments, exit_code=case.exit_code)
    if "--json" in argv:
        assert json.loads(result.stdout) == {"error": line[len("Error: "):]}, result.stdout
    else:
        assert result.stdout == "", result.stdout
    assert snapshot(*watched) == before, "the failed command wrote or removed files"


def test_table_covers_the_kernel_scope():
    assert len(CASES) >= 80 and len({c.id for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- the contract around the table


def test_json_errors_are_also_printed_as_json_on_stdout(bad):
    for argv in (["eval", bad / "no-meta.pt", "--json"], ["train", "--json", "--epz", "1"]):
        result = invoke(argv)
        line = assert_one_line_error(result)
        assert json.loads(result.stdout) == {"error": line[len("Error: "):]}


def test_full_disk_during_train_is_one_line_and_leaves_no_temp_files(tmp_path, monkeypatch):
    import robustgen.kernel.io as rio

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rio, "_fsync", full)
    out = tmp_path / "run"
    result = invoke(["train", "digits", "--width", "4", "--epochs", "1", "--eval-subset", "20", "--device", "cpu", "--out", out])
    assert_one_line_error(result, "no space left on device while writing", "free space or choose another --out")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no half-written file, no temp file


def test_sigterm_is_handled_like_ctrl_c(tmp_path, monkeypatch):
    import robustgen.cli.report as report_cli

    (tmp_path / "metrics.jsonl").write_text("{}\n")

    def terminated(run_dirs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(report_cli, "build_reports", terminated)
    before = signal.getsignal(signal.SIGTERM)
    result = invoke(["report", tmp_path])
    assert result.exit_code == 130 and result.stderr.strip() == "Interrupted: finished files are kept; rerun with --resume to continue."
    assert signal.getsignal(signal.SIGTERM) is before  # installed for the command only, then restored


def test_bare_group_and_help_are_not_errors():
    for argv in ([], ["--help"], ["train", "--help"]):
        result = invoke(argv)
        assert result.exit_code == 0 and "Usage:" in result.stdout and result.stderr == ""


@pytest.mark.slow
def test_python_dash_m_robustgen_runs_the_cli():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    version = subprocess.run([sys.executable, "-m", "robustgen", "--version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0 and "version" in version.stdout
    bad = subprocess.run([sys.executable, "-m", "robustgen", "nosuch"], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == ["Error: No such command 'nosuch'; see robustgen --help"]


def test_a_second_demo_on_one_out_gets_one_line(tmp_path):
    from robustgen.kernel.io import run_dir_lock

    out = tmp_path / "demo"
    with run_dir_lock(out):  # what a running demo holds
        before = snapshot(tmp_path)
        result = invoke(["demo", "--out", out])
        assert_one_line_error(result, f"another robustgen process is writing {out} (pid {os.getpid()})", "wait for it or choose another --out")
        assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- issue 20: numbers, downloads, resumes


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_every_float_field_of_every_config_refuses_non_finite_numbers(value):
    """The Python API gets the CLI's check: each config refuses NaN/inf in any float field when it is built."""
    import dataclasses

    from robustgen.kernel.errors import RobustgenError
    from samplers.config import InitConfig, SamplerConfig, StopConfig
    from training.config import TrainConfig

    checked = 0
    for cls in (TrainConfig, InitConfig, SamplerConfig, StopConfig):
        for field in dataclasses.fields(cls):
            if "float" not in str(field.type):
                continue
            with pytest.raises(RobustgenError, match=f"{cls.__name__}.{field.name} .* is not a finite number"):
                cls(**{field.name: value})
            checked += 1
    assert checked >= 15  # eps, step_size, lr, der_beta, ..., drift, noise, quantile, ...


def test_evaluation_api_refuses_non_finite_radii(robust_digits_checkpoint, digits):
    from robustgen.kernel.models.checkpoint import load_checkpoint
    from robustgen.kernel.errors import RobustgenError
    from training import evaluate_robustness

    model, _ = load_checkpoint(robust_digits_checkpoint)
    for kwargs in (dict(eps=float("nan")), dict(eps=float("inf"), norm="L2"), dict(eps=0.1, step_size=float("nan"))):
        with pytest.raises(RobustgenError, match="not a finite number"):
            evaluate_robustness(model, digits, steps=1, restarts=1, subset=4, **kwargs)


def test_check_finite_weights_names_the_first_bad_tensor():
    from robustgen.kernel.models.foreign import check_finite_weights
    from robustgen.kernel.errors import RobustgenError

    good = {"a": torch.zeros(3), "steps": torch.tensor(7), "b": torch.ones(2, 2)}
    check_finite_weights(good, source="x.pt")  # integer buffers and finite floats pass
    for bad_value in (float("nan"), float("inf")):
        bad = {**good, "b": torch.tensor([[1.0, bad_value], [0.0, 0.0]]), "c": torch.full((2,), bad_value)}
        with pytest.raises(RobustgenError, match=r"^x.pt holds non-finite weights \(NaN or inf in b and 1 more tensor\)"):
            check_finite_weights(bad, source="x.pt")


def test_json_output_never_holds_nan():
    from robustgen.cli.common import echo_json

    result = runner().invoke(click.Command("j", callback=lambda: echo_json({"a": float("nan"), "b": [1.5, float("inf")], "c": np.float32("nan")})))
    assert json.loads(result.stdout) == {"a": None, "b": [1.5, None], "c": None}
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout


def test_failed_download_leaves_no_empty_data_root(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        Path(kwargs["download_root"], "cifar-10-python.tar.gz").write_bytes(b"partial")  # what an interrupted transfer leaves
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    (tmp_path / "existing").mkdir()
    for root, created in ((tmp_path / "new" / "data", tmp_path / "new"), (tmp_path / "existing" / "cifar", tmp_path / "existing" / "cifar")):
        result = invoke(["train", "cifar10", "--data-root", root, "--out", tmp_path / "out"])
        assert_one_line_error(result, "could not download", "--data-root")
        assert not created.exists() and not (tmp_path / "out").exists()
    assert (tmp_path / "existing").is_dir()  # a folder that was there before stays


def _shards_from(samples: Path, shards: Path, *, block: int, blocks) -> None:
    """The shards an interrupted run leaves: blocks of `block` chains taken from a finished run's samples.npz."""
    shards.mkdir()
    with np.load(samples) as z:
        for b in blocks:
            ids = np.arange(b * block, min(len(z["labels"]), (b + 1) * block))
            np.savez(shards / f"block-{b:06d}.npz", ids=ids, images=z["images"][ids], labels=z["labels"][ids], energy_joint=z["energy_joint"][ids],
                     energy_marginal=z["energy_marginal"][ids], steps=z["steps"][ids], grad_evals=np.zeros(len(ids), np.int64),
                     eta=np.zeros(len(ids)), strip_ids=np.zeros(0, np.int64), strip_frames=np.zeros((0, 3, 8, 8, 1), np.uint8))


def test_sample_resume_redoes_a_truncated_shard_and_takes_another_batch_size(tmp_path, robust_digits_checkpoint):
    args = ["sample", "--checkpoint", robust_digits_checkpoint, "-n", "24", "--class", "2", "--class", "6", "--steps", "5", "--device", "cpu"]
    assert invoke([*args, "--batch-size", "6", "--out", tmp_path / "straight"]).exit_code == 0
    for name, batch in (("truncated", "6"), ("rebatched", "5")):
        run = tmp_path / name
        assert invoke([*args, "--batch-size", "6", "--out", run]).exit_code == 0
        (run / "samples.npz").unlink()
        (run / "meta.json").unlink()
        _shards_from(tmp_path / "straight" / "samples.npz", run / "shards", block=6, blocks=(0, 1, 3))
        whole = (run / "shards" / "block-000001.npz").read_bytes()
        (run / "shards" / "block-000001.npz").write_bytes(whole[: len(whole) // 2])  # killed while the disk was full
        result = invoke([*args, "--batch-size", batch, "--out", run, "--resume"])
        assert result.exit_code == 0, result.stderr
        with np.load(tmp_path / "straight" / "samples.npz") as a, np.load(run / "samples.npz") as b:
            assert len(b["labels"]) == 24
            for key in ("images", "labels", "energy_joint", "steps"):
                assert np.array_equal(a[key], b[key]), (name, key)
