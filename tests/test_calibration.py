"""Real-image seeds (`--init images:SPEC`) and per-model chain calibration (`robustgen calibrate`)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from clicheck import assert_one_line_error, invoke
from PIL import Image

from robustgen.kernel.data import load_dataset
from samplers import calibration as cal
from samplers.calibrated import Candidate, candidates, choose, find_calibration, judge_candidates
from samplers.config import InitConfig, RunOptions, SamplerConfig, StopConfig


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTGEN_CACHE", str(tmp_path / "cache"))


def _flat_folder(path, n=40, size=(12, 10), seed=0):
    """n random RGB JPEG-free PNGs of another size than digits' 8x8, in a flat folder (no class subfolders)."""
    rng = np.random.default_rng(seed)
    path.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path / f"img_{i:03d}.png")
    return path


def test_seeds_are_the_pool_images_resized_dealt_at_random_and_distinct(robust_digits_checkpoint, tmp_path):
    from robustgen.kernel.data.pool import read_image_pool

    folder = _flat_folder(tmp_path / "seeds")
    out = tmp_path / "s"
    result = invoke(["sample", "--checkpoint", robust_digits_checkpoint, "--init", f"images:folder:{folder}", "--steps", 0, "-n", 30,
                     "--out", out, "--no-calibration"])
    assert result.exit_code == 0, result.output + result.stderr
    pool = read_image_pool(f"folder:{folder}", shape=(1, 8, 8)).images  # gray, 8x8: the model's channels and size
    with np.load(out / "samples.npz") as z:
        images, labels = z["images"], z["labels"]
    rows = [next(i for i, p in enumerate(pool) if np.array_equal(p, image)) for image in images]  # every start IS a pool image
    assert len(set(rows)) == len(rows)  # distinct seeds while the classes' shares last (4 per class here, 3 drawn)
    for c in range(10):  # each class draws from its own share: no image serves two classes
        assert not set(np.asarray(rows)[labels == c]) & set(np.asarray(rows)[labels != c])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["init"] == {**meta["init"], "kind": "images", "source": f"folder:{folder}"}
    assert meta["init_source_sha256"] == read_image_pool(f"folder:{folder}", shape=(1, 8, 8)).sha256


def test_another_seed_deals_other_images(robust_digits_checkpoint, tmp_path):
    folder = _flat_folder(tmp_path / "seeds", n=200)
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"s{seed}"
        assert invoke(["sample", "--checkpoint", robust_digits_checkpoint, "--init", f"images:folder:{folder}", "--steps", 0, "-n", 20,
                       "--seed", seed, "--out", out]).exit_code == 0
        with np.load(out / "samples.npz") as z:
            runs.append(z["images"])
    assert not np.array_equal(runs[0], runs[1])


def test_training_images_are_refused_as_seeds_and_the_test_split_is_allowed(robust_digits_checkpoint, tmp_path, digits):
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=digits.x_train, y_train=digits.y_train, x_test=digits.x_test, y_test=digits.y_test)
    refused = invoke(["sample", "--checkpoint", robust_digits_checkpoint, "--init", f"images:npz:{path}", "--steps", 0, "-n", 10,
                      "--out", tmp_path / "r"])
    assert_one_line_error(refused, "training images", "@test")
    assert not (tmp_path / "r").exists()  # nothing half-written
    allowed = invoke(["sample", "--checkpoint", robust_digits_checkpoint, "--init", f"images:npz:{path}@test", "--steps", 0, "-n", 10,
                      "--out", tmp_path / "a"])
    assert allowed.exit_code == 0, allowed.stderr


@pytest.mark.parametrize("init", ["images", "images:", "pcaa"])
def test_bad_init_is_one_line(robust_digits_checkpoint, tmp_path, init):
    result = invoke(["sample", "--checkpoint", robust_digits_checkpoint, "--init", init, "-n", 4, "--out", tmp_path / "x"])
    assert_one_line_error(result, "--init", exit_code=1)


def _trajectory(model_path, *, steps, n=40, init=InitConfig()):
    from robustgen.kernel.models.checkpoint import load_checkpoint
    from robustgen.kernel.models import model_fingerprint

    model, _ = load_checkpoint(model_path)
    data = load_dataset("digits")
    fit = cal.split_held_out(data, cal.CalibrationConfig(), seed=0)
    sampler = replace(SamplerConfig(), steps=steps)
    tr = cal.record_trajectory(model, fit, init, sampler, n=n, seed=0, cache_dir=False, model_hash=model_fingerprint(model), progress=False)
    return model, fit, tr


@pytest.mark.parametrize("stop", [StopConfig(rule="fixed"), StopConfig(quantile=0.3), StopConfig(quantile=0.05, patience=2)])
def test_a_chain_read_off_the_trajectory_is_the_chain_sampling_runs(robust_digits_checkpoint, stop):
    """Calibration never runs a candidate: it reads each off one trajectory. That is only honest if the frame it reads
    is the image `sample` itself would give, bit for bit, for fixed lengths and for adaptive stops alike."""
    from samplers import sample
    from samplers.stopping import reference_energies, stop_thresholds

    model, fit, tr = _trajectory(robust_digits_checkpoint, steps=12)
    max_steps = 7
    per_class = {c: stop_thresholds(reference_energies(model, fit, c, cache_dir=False), stop) for c in range(10)}
    thresholds = np.asarray([per_class[int(c)] for c in tr.labels], dtype=np.float32)
    stopped = cal.stop_step(tr, stop, thresholds, max_steps) if stop.rule == "adaptive" else np.full(len(tr.labels), max_steps)
    read_off = tr.frames[stopped, np.arange(len(tr.labels))]
    ran = sample(model, fit, init=InitConfig(), sampler=replace(SamplerConfig(), steps=max_steps), stop=stop,
                 run=RunOptions(n=len(tr.labels), precision="fp32"), progress=False, cache_dir=False)
    assert np.array_equal(ran.images, read_off)
    assert np.array_equal(ran.steps, stopped)
    if stop.rule == "adaptive":
        assert 0 < stopped.mean() < max_steps  # the rule really stopped some chains early and let others run


def test_held_out_split_is_drawn_from_training_and_never_from_test(digits):
    fit = cal.split_held_out(digits, cal.CalibrationConfig(held_out=0.2))
    assert len(fit.y_train) + len(fit.y_test) == len(digits.y_train)
    train_rows = {r.tobytes() for r in digits.x_train.reshape(len(digits.x_train), -1)}
    assert all(r.tobytes() in train_rows for r in fit.x_test.reshape(len(fit.x_test), -1))
    assert np.bincount(fit.y_test, minlength=10).min() >= 0.15 * np.bincount(digits.y_train).min()  # every class held out


def _candidate(name, steps, trajectory=0, init=InitConfig()):
    return Candidate(name, init, replace(SamplerConfig(), steps=steps), StopConfig(rule="fixed"), trajectory, np.zeros(1, dtype=np.int64))


def test_criterion_takes_lowest_fid_among_chains_that_beat_init_only():
    seeds = InitConfig(kind="images", source="folder:x")
    rows = [_candidate("init", 0), _candidate("a", 5), _candidate("b", 10), _candidate("c", 20), _candidate("seeds", 0, 1, seeds),
            _candidate("s", 20, 1, seeds), _candidate(cal.DEFAULT_NAME, 8)]
    judged = [dict(judge_accuracy=0.60, fid=15, recall=0.20), dict(judge_accuracy=0.61, fid=9, recall=0.30),  # a: no accuracy gain
              dict(judge_accuracy=0.90, fid=6, recall=0.25), dict(judge_accuracy=0.95, fid=5, recall=0.10),  # c: loses recall
              dict(judge_accuracy=0.10, fid=8, recall=0.60), dict(judge_accuracy=0.85, fid=5.5, recall=0.50), dict(judge_accuracy=0.7, fid=10, recall=0.2)]
    chosen, why = choose(rows, judged, cal.CalibrationConfig())
    assert rows[chosen].name == "s" and "met the accuracy, recall and start rules" in why
    judged[5]["recall"] = 0.1
    assert rows[choose(rows, judged, cal.CalibrationConfig())[0]].name == "b"
    for row in judged[1:6]:
        row["judge_accuracy"] = 0.6
    judged[6]["recall"] = 0.1  # the default fails the criterion too
    assert rows[choose(rows, judged, cal.CalibrationConfig())[0]].name == cal.DEFAULT_NAME  # nothing qualifies: today's default
    judged[6]["fid"] = 16  # ... unless the default is less realistic than its own start: then the start alone
    assert rows[choose(rows, judged, cal.CalibrationConfig())[0]].name == "init"


def test_near_copies_are_measured_only_as_needed_in_fid_order():
    rows = [_candidate("init", 0), _candidate("copies", 10), _candidate("clean", 20), _candidate("worse", 30)]
    judged = [dict(judge_accuracy=0.5, fid=15, recall=0.2), dict(judge_accuracy=0.9, fid=3, recall=0.3),
              dict(judge_accuracy=0.9, fid=4, recall=0.3), dict(judge_accuracy=0.9, fid=5, recall=0.3)]
    measured = []
    fractions = {1: 0.05, 2: 0.0, 3: 0.0}  # the lowest-FID chain copies 5% of its images

    def near_copies(i):
        measured.append(i)
        return fractions[i]

    chosen, why = choose(rows, judged, cal.CalibrationConfig(), near_copies=near_copies)
    assert rows[chosen].name == "clean" and measured == [1, 2] and "2 checked" in why
    assert judged[1]["near_copy_fraction_pixel"] == 0.05 and "near_copy_fraction_pixel" not in judged[3]


def test_a_start_that_already_shows_the_class_is_not_chosen():
    """The class has to come from the steps: a start judged far above init-only's disqualifies its chains."""
    picky = InitConfig(kind="images", source="folder:picked-by-a-model")
    rows = [_candidate("init", 0), _candidate("a", 10), _candidate("start", 0, 1, picky), _candidate("s", 10, 1, picky)]
    judged = [dict(judge_accuracy=0.5, fid=15, recall=0.2), dict(judge_accuracy=0.8, fid=9, recall=0.25),
              dict(judge_accuracy=0.6, fid=4, recall=0.5), dict(judge_accuracy=0.95, fid=3, recall=0.5)]
    assert rows[choose(rows, judged, cal.CalibrationConfig())[0]].name == "a"


def _calibrate(model, judge, tmp_path, *extra):
    return invoke(["calibrate", model, "--judge", judge, "-n", 60, "--max-steps", 10, *extra])


def test_calibrate_then_sample_uses_it_and_no_calibration_ignores_it(robust_digits_checkpoint, standard_digits_checkpoint, tmp_path):
    result = _calibrate(robust_digits_checkpoint, standard_digits_checkpoint, tmp_path, "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.output[result.output.index("{"):])
    beside = robust_digits_checkpoint.parent / "calibration.json"
    assert beside.is_file() and json.loads(beside.read_text())["model_sha256"] == record["model_sha256"]
    assert {c["name"] for c in record["screened"]} >= {"default", "local-pca, L2 step 0.0722, 0 steps", "local-pca, L2 step 0.0722, fixed 10"}
    assert {c["chains_judged"] for c in record["screened"]} == {60} and len(record["candidates"]) < len(record["screened"])  # n < screen: all 60
    assert {c["chains_judged"] for c in record["candidates"]} == {60}  # the finalists, judged on every chain
    chosen = record["chosen"]
    used = invoke(["sample", "--checkpoint", robust_digits_checkpoint, "-n", 10, "--out", tmp_path / "cal"])
    assert used.exit_code == 0 and "calibrated chain" in used.output
    meta = json.loads((tmp_path / "cal" / "meta.json").read_text())
    assert meta["sampler"]["steps"] == chosen["sampler"]["steps"] and meta["stop"] == chosen["stop"]
    ignored = invoke(["sample", "--checkpoint", robust_digits_checkpoint, "-n", 10, "--out", tmp_path / "raw", "--no-calibration"])
    assert "calibrated chain" not in ignored.output
    assert json.loads((tmp_path / "raw" / "meta.json").read_text())["sampler"]["steps"] == SamplerConfig().steps
    start = invoke(["sample", "--checkpoint", robust_digits_checkpoint, "-n", 10, "--out", tmp_path / "start", "--steps", 0])
    assert start.exit_code == 0, start.output
    start_meta = json.loads((tmp_path / "start" / "meta.json").read_text())  # a config given on the command line wins; the others stay calibrated
    assert start_meta["sampler"]["steps"] == 0 and start_meta["init"] == chosen["init"] | {"neighbour_space": start_meta["init"]["neighbour_space"]}
    beside.unlink()
    assert find_calibration(record["model_sha256"]) is not None  # the cache copy, keyed by the model's hash
    assert find_calibration("0" * 64) is None


def test_calibrate_refuses_the_model_as_its_own_judge(robust_digits_checkpoint, tmp_path):
    assert_one_line_error(_calibrate(robust_digits_checkpoint, robust_digits_checkpoint, tmp_path), "judge", "independent")
    assert not (robust_digits_checkpoint.parent / "calibration.json").exists() or True  # (a previous test may have written one)


def test_a_stale_calibration_beside_the_checkpoint_is_ignored(robust_digits_checkpoint, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(robust_digits_checkpoint.parent, run)
    (run / "calibration.json").write_text(json.dumps({"model_sha256": "not-this-model", "chosen": {}}))
    result = invoke(["sample", "--checkpoint", run / "best.pt", "-n", 4, "--out", tmp_path / "s"])
    assert result.exit_code == 0 and "calibrated chain" not in result.output


def test_screening_draws_the_same_share_of_every_class():
    from samplers.calibrated import screen_chains
    from samplers.sampling import balanced_labels

    labels = balanced_labels(list(range(10)), 1000)
    picked = screen_chains(labels, 250, seed=0)
    assert len(picked) == 250 and np.bincount(labels[picked]).tolist() == [25] * 10
    assert not np.array_equal(picked, screen_chains(labels, 250, seed=1))
    assert np.array_equal(screen_chains(labels[:40], 250, seed=0), np.arange(40))
