"""torchrun: 2 CPU processes with Gloo give the same samples and scores as 1, train on whole-dataset counts, resume after a kill.

Every test launches the real launcher (`python -m torch.distributed.run --standalone`) in a
subprocess, one thread per rank, exactly as a user would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from robustgen.kernel.models.checkpoint import load_checkpoint, read_checkpoint
from robustgen.kernel.io import read_jsonl

pytestmark = pytest.mark.slow
TRAIN = ["train", "digits", "--width", "4", "--batch-size", "64", "--eval-pgd-steps", "2", "--eval-subset", "100", "--device", "cpu",
         "--co-check-every", "5"]


def _torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "robustgen"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(args: list, *, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_torchrun(nproc) + [str(a) for a in args], env=_env(), capture_output=True, text=True, timeout=timeout)


def test_training_at_world_size_2_counts_the_whole_dataset(tmp_path):
    done = run(TRAIN + ["--epochs", "2", "--out", tmp_path / "run"])
    assert done.returncode == 0, done.stderr[-2000:]
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["n_train"] for r in records] == [1437, 1437]  # every training image, counted once across the 2 ranks
    assert all(r["eval_n"] == 100 and 0 <= r["test_pgd_acc"] <= r["test_clean_acc"] <= 1 for r in records)
    assert all(0 <= r["aae_high_count"] <= r["aae_count"] <= 1437 for r in records)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["world_size"] == 2 and config["backend"] == "gloo" and config["batch_norm"] == "per-rank"
    model, meta = load_checkpoint(tmp_path / "run" / "best.pt")
    assert meta["epoch"] in (0, 1) and model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert done.stdout.count("Next: robustgen eval") == 1  # only rank 0 prints the summary


def test_training_killed_at_world_size_2_resumes_exactly(tmp_path):
    straight = run(TRAIN + ["--epochs", "3", "--out", tmp_path / "straight"])
    assert straight.returncode == 0, straight.stderr[-2000:]
    job = subprocess.Popen(_torchrun(2) + [str(a) for a in TRAIN + ["--epochs", "3", "--out", tmp_path / "killed"]],
                           env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and len(read_jsonl(metrics)) >= 1):
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)  # the whole job, mid-epoch-2
    job.wait(timeout=60)
    assert len(read_jsonl(metrics)) < 3
    resumed = run(["train", "--resume", tmp_path / "killed"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = read_checkpoint(tmp_path / "straight" / "last.pt"), read_checkpoint(tmp_path / "killed" / "last.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert [r["test_pgd_acc"] for r in read_jsonl(metrics)] == [r["test_pgd_acc"] for r in read_jsonl(tmp_path / "straight" / "metrics.jsonl")]
    assert not list((tmp_path / "killed").glob(".*"))  # no stale temp or lock file left


def test_sampling_is_bit_identical_to_one_process_and_scores_are_equal(tmp_path, robust_digits_checkpoint, standard_digits_checkpoint):
    sample = ["sample", "--checkpoint", robust_digits_checkpoint, "--num-images", 40, "--batch-size", 6, "--device", "cpu", "--class", 1, "--class", 7]
    for nproc in (1, 2):
        done = run(sample + ["--out", tmp_path / f"w{nproc}"], nproc=nproc)
        assert done.returncode == 0, done.stderr[-2000:]
    with np.load(tmp_path / "w1" / "samples.npz") as one, np.load(tmp_path / "w2" / "samples.npz") as two:
        for key in ("images", "labels", "energy_joint", "energy_marginal", "steps", "strip_frames"):
            assert np.array_equal(one[key], two[key]), key
    scores = {}
    for nproc in (1, 2):
        out = tmp_path / f"score-{nproc}.json"
        done = run(["score", tmp_path / "w1", "--features", standard_digits_checkpoint, "--metrics", "is,fid,kid,prc", "--kid-subset-size", 20,
                    "--device", "cpu", "--out", out], nproc=nproc)
        assert done.returncode == 0, done.stderr[-2000:]
        scores[nproc] = json.loads(out.read_text())["metrics"]
    assert scores[1].keys() == scores[2].keys() and len(scores[1]) >= 8
    for key, value in scores[1].items():
        assert scores[2][key] == pytest.approx(value, abs=1e-6, rel=1e-6), key


def test_sampling_resumes_at_another_world_size(tmp_path, robust_digits_checkpoint):
    args = ["sample", "--checkpoint", robust_digits_checkpoint, "--num-images", 30, "--batch-size", 5, "--device", "cpu", "--class", 3]
    assert run(args + ["--out", tmp_path / "straight"], nproc=1).returncode == 0
    partial = tmp_path / "partial"
    assert run(args + ["--out", partial], nproc=2).returncode == 0
    (partial / "samples.npz").unlink()
    (partial / "meta.json").unlink()
    (partial / "shards").mkdir()
    with np.load(tmp_path / "straight" / "samples.npz") as z:  # two finished blocks, as an interrupted run leaves them
        for block in (0, 3):
            ids = np.arange(block * 5, block * 5 + 5)
            np.savez(partial / "shards" / f"block-{block:06d}.npz", ids=ids, images=z["images"][ids], labels=z["labels"][ids],
                     energy_joint=z["energy_joint"][ids], energy_marginal=z["energy_marginal"][ids], steps=z["steps"][ids],
                     grad_evals=np.zeros(5, np.int64), eta=np.zeros(5), strip_ids=np.zeros(0, np.int64), strip_frames=np.zeros((0, 3, 8, 8, 1), np.uint8))
    done = run(args + ["--out", partial, "--resume"], nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(tmp_path / "straight" / "samples.npz") as a, np.load(partial / "samples.npz") as b:
        assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["steps"], b["steps"])


def test_a_failing_rank_ends_the_job_with_its_message(tmp_path):
    done = run(["train", "nosuchset", "--device", "cpu"], timeout=120)  # would hang for 30 min if a rank waited on a dead one
    assert done.returncode != 0
    assert re.search(r"Error: rank [01]: unknown dataset 'nosuchset'", done.stderr)  # the launcher then stops the other rank
    assert not re.search(r'File ".*/(robustgen|training|samplers)/', done.stderr)  # torchrun's own report only, no traceback of ours
    # a global batch that does not divide by the ranks: refused before config.json (or anything) is written, and
    # torchrun's failure summary carries the rank's line where it would otherwise link to its docs
    done = run(TRAIN + ["--batch-size", "63", "--out", tmp_path / "run"], timeout=120)
    assert done.returncode == 1 and not (tmp_path / "run").exists()
    line = "--batch-size 63 is the global batch and must divide by the 2 ranks: use a multiple of 2"
    assert re.search(rf"^Error: rank [01]: {re.escape(line)}$", done.stderr, re.M)
    assert re.search(rf"traceback : Error: rank [01]: {re.escape(line)}", done.stderr)


def test_readme_torchrun_examples_reach_robustgen_with_their_options():
    """Every README line that launches robustgen under torchrun parses as torchrun would parse it: its options reach
    robustgen (no `--n`, which torchrun reads as its own --nnodes)."""
    import shlex
    from pathlib import Path

    from torch.distributed.run import get_args_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = [line.split("#")[0].strip() for line in readme.splitlines() if line.lstrip().startswith("torchrun ") and " -m robustgen " in line]
    assert len(lines) >= 3
    for line in lines:
        args = shlex.split(line)[1:]
        parsed = get_args_parser().parse_args(args)
        assert parsed.training_script == "robustgen" and parsed.training_script_args == args[args.index("robustgen") + 1:], line


def test_every_cli_option_survives_torchrun_argument_parsing():
    """torchrun's argparse matches abbreviations even after the module name: `--n` would be read as --nnodes.
    No option of any command (except the legacy --n alias) may be such an abbreviation."""
    import click
    from torch.distributed.run import get_args_parser

    from robustgen.cli import COMMANDS, main

    parser = get_args_parser()
    ctx = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        for param in command.params:
            for opt in param.opts + param.secondary_opts:
                if not opt.startswith("-") or opt == "--n":
                    continue
                argv = ["--nproc_per_node", "2", "-m", "robustgen", name, opt, "1"]
                parsed = parser.parse_args(argv)
                assert parsed.training_script == "robustgen" and parsed.training_script_args == [name, opt, "1"], (name, opt)
    with pytest.raises(SystemExit):  # the clash the issue found, for the record
        parser.parse_args(["--nproc_per_node", "2", "-m", "robustgen", "sample", "--n", "600"])
