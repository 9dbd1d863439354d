"""Scoring: parity with direct formulas, caching, per-class scores, and every bad input's one-line error.

Most tests use a "pixels-as-features" classifier (features = pixel values, logits =
scale * pixels), so the features torch-fidelity sees are known exactly and the
metrics can be checked against numpy/scipy on the same numbers.
"""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from robustgen.kernel.models.checkpoint import save_checkpoint
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.models import model_names, register_model
from robustgen.kernel.models.base import Classifier
from samplers.scoring import (
    KEY_CLASS_FID_MEAN, KEY_F_SCORE, KEY_FID, KEY_FID_TEST, KEY_IS_MEAN, KEY_IS_STD, KEY_JUDGE_ACCURACY, KEY_KID_MEAN, KEY_PRECISION, KEY_RECALL, score,
)
from samplers.scoring import feature_cache as score_cache
from samplers.scoring.extractors import NOT_COMPARABLE

PIXEL_ARCH = "test-pixels-as-logits"


class PixelsAsLogits(Classifier):
    """features(x) = 255 * x (the raw pixel values); logits = scale * features."""

    def __init__(self, *, num_classes: int, in_channels: int = 1, scale: float = 0.05, mean=None, std=None):
        super().__init__(num_classes=num_classes, in_channels=in_channels, mean=[0.0] * in_channels, std=[1.0] * in_channels)
        self.feature_dim = num_classes
        self.head = nn.Linear(num_classes, num_classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(num_classes) * scale)
            self.head.bias.zero_()

    def embed(self, x):
        return x.flatten(1) * 255.0


if PIXEL_ARCH not in model_names():
    register_model(PIXEL_ARCH)(lambda **kw: PixelsAsLogits(**kw))


def pixel_checkpoint(path: Path, k: int = 10, scale: float = 0.05) -> Path:
    """A checkpoint whose extractor sees images of shape (1, k) (HxW, 1 channel) as k features."""
    model = PixelsAsLogits(num_classes=k, scale=scale)
    meta = {"arch": PIXEL_ARCH, "arch_args": {"num_classes": k, "scale": scale}, "classes": [str(i) for i in range(k)],
            "input_shape": [1, 1, k], "dataset": "synthetic", "mean": [0.0], "std": [1.0]}
    save_checkpoint(path, model=model, meta=meta)
    return path


def to_images(values: np.ndarray) -> np.ndarray:
    """(N, k) values 0..255 -> uint8 NHWC images (N, 1, k, 1)."""
    return np.clip(np.round(values), 0, 255).astype(np.uint8)[:, None, :, None]


def write_ref(path: Path, x_train: np.ndarray, y_train: np.ndarray, x_test=None, y_test=None) -> str:
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_train if x_test is None else x_test, y_test=y_train if y_test is None else y_test)
    return f"npz:{path}"


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Direct FID: |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b)) in float64 (scipy)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


@pytest.fixture()
def synthetic(tmp_path):
    """Two different Gaussian clouds of 10-pixel images, labelled 0..9, and a pixels-as-features checkpoint."""
    rng = np.random.default_rng(0)
    k, n = 10, 400
    mix = rng.normal(size=(k, k)) * 0.3 + np.eye(k)
    ref_vals = 100 + 20 * rng.normal(size=(n, k))
    gen_vals = 110 + 25 * rng.normal(size=(n, k)) @ mix
    ref_x, gen_x = to_images(ref_vals), to_images(gen_vals)
    ref_y, gen_y = np.arange(n) % k, (np.arange(n) * 7) % k
    ref = write_ref(tmp_path / "ref.npz", ref_x, ref_y)
    np.savez(tmp_path / "gen.npz", images=gen_x, labels=gen_y)
    return {
        "ckpt": pixel_checkpoint(tmp_path / "pixels.pt", k),
        "ref": ref, "ref_x": ref_x, "ref_y": ref_y,
        "gen": tmp_path / "gen.npz", "gen_x": gen_x, "gen_y": gen_y,
        "cache": tmp_path / "cache",
    }


def run(data, **kw):
    kw.setdefault("features", data["ckpt"])
    kw.setdefault("ref", data["ref"])
    kw.setdefault("cache_dir", data["cache"])
    return score(data["gen"], **kw)


# --------------------------------------------------------------------------- parity


def test_fid_through_torch_fidelity_equals_direct_frechet_distance(synthetic):
    result = run(synthetic, metrics=("fid",), per_class=False)
    direct = frechet(synthetic["gen_x"].reshape(len(synthetic["gen_x"]), -1), synthetic["ref_x"].reshape(len(synthetic["ref_x"]), -1))
    assert direct > 100  # the two clouds really differ
    assert result.metrics[KEY_FID] == pytest.approx(direct, rel=1e-5)


def test_class_conditional_fid_equals_direct_frechet_distance_per_class(synthetic):
    result = run(synthetic, metrics=("fid",))
    assert len(result.per_class) == 10
    gen = synthetic["gen_x"].reshape(len(synthetic["gen_x"]), -1)
    ref = synthetic["ref_x"].reshape(len(synthetic["ref_x"]), -1)
    for row in result.per_class:
        k = row.class_index
        mine, theirs = gen[synthetic["gen_y"] == k], ref[synthetic["ref_y"] == k]
        assert row.n_samples == len(mine) and row.n_reference == len(theirs)
        assert row.fid == pytest.approx(frechet(mine, theirs), rel=1e-5)
    assert result.metrics[KEY_CLASS_FID_MEAN] == pytest.approx(np.mean([r.fid for r in result.per_class]))


def test_class_fid_is_the_same_with_and_without_cache_and_sample_features_are_not_cached(synthetic):
    # (Replaces the test of the per-class calculate_metrics fallback, which is gone: per-class FID is a
    # function of the features of the one extraction stage.)
    cached = run(synthetic, metrics=("fid",))
    uncached = run(synthetic, metrics=("fid",), cache=False)
    assert [r.fid for r in cached.per_class] == pytest.approx([r.fid for r in uncached.per_class], rel=1e-9)
    assert cached.metrics[KEY_FID] == pytest.approx(uncached.metrics[KEY_FID], rel=1e-9)
    fingerprint = cached.reference_fingerprint[:24]
    files = [p.name for p in synthetic["cache"].iterdir()]
    assert files and all(name.startswith(f"rg-{fingerprint}-") for name in files)  # reference entries only, no sample set


def test_inception_score_equals_closed_form_on_confident_balanced_logits(tmp_path):
    # sample i puts logit c on class i % K and 0 elsewhere; the marginal is exactly uniform, so
    # IS = exp(KL(p || uniform)) = K * exp(-H(p)) with p = softmax([c, 0, ..., 0])
    k, n, c, scale = 10, 1000, 10.0, 0.05
    vals = np.zeros((n, k))
    vals[np.arange(n), np.arange(n) % k] = c / scale
    ckpt = pixel_checkpoint(tmp_path / "p.pt", k, scale)
    result = score(to_images(vals), metrics=("is",), features=ckpt, is_splits=1, cache=False)
    p = np.exp([c] + [0.0] * (k - 1))
    p /= p.sum()
    closed = k * np.exp((p * np.log(p)).sum())
    assert closed == pytest.approx(9.96, abs=0.01)
    assert result.metrics[KEY_IS_MEAN] == pytest.approx(closed, rel=1e-6)
    assert result.metrics[KEY_IS_STD] == pytest.approx(0.0, abs=1e-9)
    assert result.reference is None  # IS alone needs no reference


def test_inception_score_equals_formula_on_random_logits(tmp_path):
    rng = np.random.default_rng(1)
    k, n, scale = 10, 500, 0.03
    images = to_images(rng.uniform(0, 255, size=(n, k)))
    logits = images.reshape(n, k).astype(np.float64) * scale
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = p.mean(0)
    expected = np.exp((p * (np.log(p) - np.log(q))).sum(1).mean())
    result = score(images, metrics=("is",), features=pixel_checkpoint(tmp_path / "p.pt", k, scale), is_splits=1, cache=False)
    assert result.metrics[KEY_IS_MEAN] == pytest.approx(expected, rel=1e-5)


def test_results_do_not_depend_on_batch_size(synthetic):
    a = run(synthetic, metrics=("is", "fid", "kid", "prc"), batch_size=7, kid_subset_size=100)
    b = run(synthetic, metrics=("is", "fid", "kid", "prc"), batch_size=400, kid_subset_size=100, cache=False)
    # fid_test and the memorisation keys are new; the synthetic reference's test split repeats its train split, so the
    # NN ratios (median test distance 0) are left out and a warning says why.
    memorisation = {"near_copy_fraction_pixel", "near_copy_fraction_features", "data_copying_ct_pixel", "data_copying_ct_features"}
    assert set(a.metrics) == set(b.metrics) == {KEY_IS_MEAN, KEY_IS_STD, KEY_FID, KEY_FID_TEST, KEY_CLASS_FID_MEAN, "kid_mean", "kid_std",
                                                KEY_PRECISION, KEY_RECALL, KEY_F_SCORE, "precision_test", "recall_test"} | memorisation
    assert any("the splits share images" in w for w in a.warnings)
    for key in a.metrics:
        assert a.metrics[key] == pytest.approx(b.metrics[key], rel=1e-5, abs=1e-9), key


@pytest.mark.slow
def test_classifier_extractor_fid_matches_direct_features_and_batch_size(standard_digits_checkpoint, digits, tmp_path):
    from robustgen.kernel.models.checkpoint import load_checkpoint
    from robustgen.kernel.data import to_float

    common = dict(ref="digits", features=standard_digits_checkpoint, metrics=("is", "fid", "kid"), cache_dir=tmp_path, per_class=False)
    small = score(digits.x_test, batch_size=13, **common)
    large = score(digits.x_test, batch_size=360, cache=False, **common)
    for key in small.metrics:
        assert small.metrics[key] == pytest.approx(large.metrics[key], rel=1e-4, abs=1e-6), key
    model, _ = load_checkpoint(standard_digits_checkpoint)
    with torch.no_grad():
        f_test = model.features(to_float(digits.x_test)).numpy()
        f_train = model.features(to_float(digits.x_train)).numpy()
    assert small.metrics[KEY_FID] == pytest.approx(frechet(f_test, f_train), rel=1e-3)
    assert NOT_COMPARABLE in small.to_dict()["label"]
    assert small.extractor.kind == "classifier" and not small.comparable_with_papers


# --------------------------------------------------------------------------- cache


def test_reference_features_are_cached_by_dataset_split_and_extractor(synthetic, tmp_path):
    first = run(synthetic, metrics=("fid", "kid"), per_class=False, kid_subset_size=50)
    second = run(synthetic, metrics=("fid", "kid"), per_class=False, kid_subset_size=50)
    assert not first.reference_cached and second.reference_cached
    assert first.metrics == second.metrics
    assert any(e["split"] == "train" and e["extractor"] == first.extractor.name for e in score_cache.entries(synthetic["cache"]))
    # The first call also extracted the test split (for fid_test and memorisation), under its own key: scoring
    # against the test split reuses it, and its FID is the first call's fid_test. (Deliberate change: before
    # fid_test, the test split was only ever extracted when asked for with --ref-split test.)
    assert {e["split"] for e in score_cache.entries(synthetic["cache"])} == {"train", "test"}
    other_split = run(synthetic, metrics=("fid",), per_class=False, ref_split="test")
    assert other_split.reference_cached and other_split.splits[KEY_FID] == "test"
    assert other_split.metrics[KEY_FID] == pytest.approx(first.metrics[KEY_FID_TEST], rel=1e-12)
    fresh = tmp_path / "fresh-cache"  # without fid and memorisation only the chosen split is extracted: same arrays, own entry
    run(synthetic, metrics=("kid",), kid_subset_size=50, memorisation=False, cache_dir=fresh)
    assert not run(synthetic, metrics=("kid",), kid_subset_size=50, memorisation=False, cache_dir=fresh, ref_split="test").reference_cached
    other_ckpt = run(synthetic, metrics=("fid",), per_class=False, features=pixel_checkpoint(tmp_path / "other.pt", 10, scale=0.07))
    assert not other_ckpt.reference_cached and other_ckpt.extractor.name != first.extractor.name


# --------------------------------------------------------------------------- too few samples


def test_kid_subset_larger_than_samples_is_lowered_with_warning_or_rejected_when_explicit(synthetic):
    result = run(synthetic, metrics=("kid",), per_class=False)
    assert result.settings["kid_subset_size"] == 400
    assert any("KID subset size lowered from 1000 to 400" in w for w in result.warnings)
    with pytest.raises(RobustgenError, match=r"--kid-subset-size 500 is larger than the 400 samples: pass --kid-subset-size 400 or less"):
        run(synthetic, metrics=("kid",), kid_subset_size=500)


def test_fid_with_fewer_samples_than_feature_dims_warns_rank_deficient(synthetic):
    few = synthetic["gen_x"][:8]
    result = score(few, ref=synthetic["ref"], features=synthetic["ckpt"], metrics=("fid",), cache_dir=synthetic["cache"])
    assert any("8 samples <= 10 feature dims" in w and "rank-deficient" in w for w in result.warnings)
    assert np.isfinite(result.metrics[KEY_FID])


def test_per_class_fid_skips_classes_with_fewer_than_two_samples(synthetic):
    images = synthetic["gen_x"][:21]
    labels = np.array([0] * 10 + [1] * 10 + [2])
    result = score(images, labels=labels, ref=synthetic["ref"], features=synthetic["ckpt"], metrics=("fid",), cache_dir=synthetic["cache"])
    rows = {r.class_index: r for r in result.per_class}
    assert rows[0].fid is not None and rows[1].fid is not None
    assert rows[2].fid is None and "only 1 sample of class 2" in rows[2].note
    assert any("only 1 sample of class 2" in note for note in result.notes)


def test_too_few_samples_for_is_or_prc_is_an_error(synthetic):
    with pytest.raises(RobustgenError, match="IS on 5 samples in 10 splits"):
        score(synthetic["gen_x"][:5], features=synthetic["ckpt"], metrics=("is",), cache=False)
    with pytest.raises(RobustgenError, match="precision/recall on 3 samples"):
        score(synthetic["gen_x"][:3], ref=synthetic["ref"], features=synthetic["ckpt"], metrics=("prc",), cache=False)


# --------------------------------------------------------------------------- judge and labels


@pytest.mark.slow
def test_judge_accuracy_overall_and_per_class(standard_digits_checkpoint, digits, tmp_path):
    from robustgen.kernel.models.checkpoint import load_checkpoint
    from robustgen.kernel.data import to_float

    model, _ = load_checkpoint(standard_digits_checkpoint)
    with torch.no_grad():
        pred = model(to_float(digits.x_test)).argmax(1).numpy()
    result = score(digits.x_test, labels=digits.y_test, ref="digits", features=standard_digits_checkpoint,
                   judge=standard_digits_checkpoint, metrics=("fid",), cache_dir=tmp_path)
    assert result.metrics[KEY_JUDGE_ACCURACY] == pytest.approx((pred == digits.y_test).mean())
    for row in result.per_class:
        mask = digits.y_test == row.class_index
        assert row.judge_accuracy == pytest.approx((pred[mask] == row.class_index).mean())
        assert row.fid is not None
    wrong = score(digits.x_test, labels=(digits.y_test + 1) % 10, ref="digits", features=standard_digits_checkpoint,
                  judge=standard_digits_checkpoint, metrics=("fid",), per_class=False, cache_dir=tmp_path)
    assert wrong.metrics[KEY_JUDGE_ACCURACY] < result.metrics[KEY_JUDGE_ACCURACY]


def test_sample_run_dir_is_one_call_and_reference_comes_from_meta(tmp_path, digits):
    run_dir = tmp_path / "samples"
    run_dir.mkdir()
    ckpt = _digits_checkpoint(tmp_path / "rand.pt", digits)
    np.savez(run_dir / "samples.npz", images=digits.x_test[:60], labels=digits.y_test[:60], energy_joint=np.zeros(60, np.float32),
             energy_marginal=np.zeros(60, np.float32), steps=np.ones(60, np.int64), classes=np.asarray(digits.classes))
    (run_dir / "meta.json").write_text(json.dumps({"checkpoint": str(ckpt), "dataset": "digits", "dataset_sha256": digits.fingerprint()}))
    other = _digits_checkpoint(tmp_path / "other.pt", digits, seed=1)
    result = score(run_dir, features=other, metrics=("is", "fid"), cache_dir=tmp_path / "cache")
    assert result.reference == "digits" and result.reference_split == "train" and result.n_samples == 60
    assert {r.class_index for r in result.per_class} == set(np.unique(digits.y_test[:60]).tolist())
    same = score(run_dir, features=ckpt, metrics=("fid",), per_class=False, cache_dir=tmp_path / "cache")
    assert any("the feature extractor is the classifier that generated the samples" in w for w in same.warnings)
    saved = result.save(run_dir / "score.json")
    assert json.loads(saved.read_text())["metrics"][KEY_FID] == pytest.approx(result.metrics[KEY_FID])


def _digits_checkpoint(path: Path, digits, *, seed: int = 0, width: int = 4) -> Path:
    from robustgen.kernel.models.checkpoint import model_meta
    from robustgen.kernel.models import build_model

    torch.manual_seed(seed)
    args = dict(num_classes=10, in_channels=1, width=width, mean=list(digits.mean), std=list(digits.std))
    save_checkpoint(path, model=build_model("preact-resnet18", **args), meta=model_meta(arch="preact-resnet18", arch_args=args, dataset=digits))
    return path


def test_folder_per_class_samples_get_reference_labels(tmp_path, synthetic):
    from PIL import Image

    folder = tmp_path / "pngs"
    for k in (3, 5):
        (folder / str(k)).mkdir(parents=True)
        for i, img in enumerate(synthetic["gen_x"][synthetic["gen_y"] == k][:12]):
            Image.fromarray(img[..., 0]).save(folder / str(k) / f"{i}.png")
    result = score(folder, ref=synthetic["ref"], features=synthetic["ckpt"], metrics=("fid",), cache_dir=synthetic["cache"])
    assert [(r.class_index, r.n_samples) for r in result.per_class] == [(3, 12), (5, 12)]


# --------------------------------------------------------------------------- Inception, offline


def test_inception_offline_names_inception_weights(monkeypatch, tmp_path, synthetic):
    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RobustgenError, match=r"cannot download the Inception-v3 weights .*--inception-weights PATH"):
        score(synthetic["gen"], ref=synthetic["ref"], features="inception")


def test_inception_weights_path_must_be_inception_weights(tmp_path, synthetic):
    with pytest.raises(RobustgenError, match="--inception-weights .*file not found"):
        score(synthetic["gen"], ref=synthetic["ref"], inception_weights=tmp_path / "missing.pth")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(RobustgenError, match="not torch-fidelity's Inception-v3 weights"):
        score(synthetic["gen"], ref=synthetic["ref"], inception_weights=tmp_path / "wrong.pth")


@pytest.mark.slow
def test_inception_runs_from_local_weights_without_network(monkeypatch, tmp_path):
    """--inception-weights reaches torch-fidelity's feature_extractor_weights_path: no download is tried."""
    import torch.hub
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    def no_network(*args, **kwargs):
        raise AssertionError("download attempted although weights were given")

    # random-init weights in the real format (a state dict of FeatureExtractorInceptionV3)
    monkeypatch.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: None)
    monkeypatch.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    torch.manual_seed(0)
    net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "weights-inception-random.pth"
    torch.save(net.state_dict(), weights)
    monkeypatch.undo()
    monkeypatch.setattr(tfi, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)

    rng = np.random.default_rng(0)
    gen = rng.integers(0, 256, size=(10, 16, 16, 1), dtype=np.uint8)  # grayscale: repeated to RGB for Inception
    ref = write_ref(tmp_path / "ref.npz", rng.integers(0, 256, size=(10, 16, 16, 1), dtype=np.uint8), np.zeros(10, np.int64))
    result = score(gen, ref=ref, inception_weights=weights, metrics=("is", "fid"), cache_dir=tmp_path / "cache", batch_size=10)
    assert result.extractor.name == "inception-v3-compat" and result.comparable_with_papers
    assert result.extractor.weights_path == str(weights)
    assert np.isfinite(result.metrics[KEY_FID]) and np.isfinite(result.metrics[KEY_IS_MEAN])
    assert any("rank-deficient" in w for w in result.warnings) and any("papers use 50,000" in w for w in result.warnings)


# --------------------------------------------------------------------------- bad input: one line each


def _assert_one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_sample_inputs_give_one_clear_line(tmp_path, synthetic):
    from PIL import Image

    ref, ckpt = synthetic["ref"], synthetic["ckpt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RobustgenError) as exc:
        score(empty, ref=ref, features=ckpt)
    _assert_one_line(exc, "holds no images")

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("hi")
    with pytest.raises(RobustgenError) as exc:
        score(notes, ref=ref, features=ckpt)
    _assert_one_line(exc, "holds no images", "readme.txt")

    broken = tmp_path / "broken"
    broken.mkdir()
    Image.fromarray(np.zeros((1, 10), np.uint8)).save(broken / "a.png")
    (broken / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(RobustgenError) as exc:
        score(broken, ref=ref, features=ckpt)
    _assert_one_line(exc, "b.png is not a readable image")

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((1, 10), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.zeros((2, 10), np.uint8)).save(mixed / "b.png")
    with pytest.raises(RobustgenError) as exc:
        score(mixed, ref=ref, features=ckpt)
    _assert_one_line(exc, "resize all images to one size", "resize")

    run_dir = tmp_path / "unfinished"
    run_dir.mkdir()
    (run_dir / "meta.json").write_text("{}")
    with pytest.raises(RobustgenError) as exc:
        score(run_dir, ref=ref, features=ckpt)
    _assert_one_line(exc, "without samples.npz")

    with pytest.raises(RobustgenError) as exc:
        score(tmp_path / "nowhere", ref=ref, features=ckpt)
    _assert_one_line(exc, "not found")

    np.savez(tmp_path / "floats.npz", images=np.zeros((4, 1, 10, 1), np.float32))
    with pytest.raises(RobustgenError) as exc:
        score(tmp_path / "floats.npz", ref=ref, features=ckpt)
    _assert_one_line(exc, "float32", "uint8")

    np.savez(tmp_path / "nchw.npz", images=np.zeros((4, 3, 8, 8), np.uint8))
    with pytest.raises(RobustgenError) as exc:
        score(tmp_path / "nchw.npz", ref=ref, features=ckpt)
    _assert_one_line(exc, "channels-first", "NHWC")

    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(RobustgenError) as exc:
        score(tmp_path / "two.npz", ref=ref, features=ckpt)
    _assert_one_line(exc, "no image array", "images")


def test_samples_that_do_not_match_the_reference_or_extractor(tmp_path, synthetic):
    rng = np.random.default_rng(0)
    rgb_ref = write_ref(tmp_path / "rgb.npz", rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8), np.zeros(20, np.int64))
    gray = rng.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)
    with pytest.raises(RobustgenError) as exc:
        score(gray, ref=rgb_ref, features=synthetic["ckpt"])
    _assert_one_line(exc, "grayscale (1 channel)", "RGB (3 channels)")

    gray_ref = write_ref(tmp_path / "gray.npz", rng.integers(0, 256, (20, 16, 16, 1), dtype=np.uint8), np.zeros(20, np.int64))
    with pytest.raises(RobustgenError) as exc:
        score(gray, ref=gray_ref, features=synthetic["ckpt"])
    _assert_one_line(exc, "8x8 but the reference", "16x16")

    with pytest.raises(RobustgenError) as exc:
        score(gray, ref=None, metrics=("is",), features=synthetic["ckpt"])
    _assert_one_line(exc, "takes 1x10x1 images but the samples are 8x8x1")

    with pytest.raises(RobustgenError) as exc:
        score(synthetic["gen_x"], labels=np.full(len(synthetic["gen_x"]), 12), ref=synthetic["ref"], features=synthetic["ckpt"], metrics=("fid",))
    _assert_one_line(exc, "label 12", "classes 0..9")

    with pytest.raises(RobustgenError) as exc:
        score(synthetic["gen_x"], metrics=("fid",), features=synthetic["ckpt"])
    _assert_one_line(exc, "no reference for FID", "--ref")

    with pytest.raises(RobustgenError) as exc:
        score(synthetic["gen"], ref=synthetic["ref"], metrics="is,fud", features=synthetic["ckpt"])
    _assert_one_line(exc, "unknown metric fud")

    with pytest.raises(RobustgenError) as exc:
        score(synthetic["gen"], ref=synthetic["ref"], features=tmp_path / "nope.pt")
    _assert_one_line(exc, "no such checkpoint")


@pytest.mark.slow
def test_cifar_subset_real_scores_better_than_noise(cifar_subset_path, tmp_path):
    """32x32 RGB end to end on real CIFAR-10 images (random width-4 extractor: only the ordering is meaningful)."""
    from robustgen.kernel.models.checkpoint import model_meta
    from robustgen.kernel.data import load_dataset
    from robustgen.kernel.models import build_model

    data = load_dataset(f"npz:{cifar_subset_path}")
    torch.manual_seed(0)
    args = dict(num_classes=10, in_channels=3, width=4, mean=list(data.mean), std=list(data.std))
    ckpt = tmp_path / "w4.pt"
    save_checkpoint(ckpt, model=build_model("preact-resnet18", **args), meta=model_meta(arch="preact-resnet18", arch_args=args, dataset=data))
    common = dict(ref=f"npz:{cifar_subset_path}", features=ckpt, metrics=("fid", "kid", "prc"), cache_dir=tmp_path / "cache", kid_subset_size=200)
    real = score(data.x_test[:300], labels=data.y_test[:300], **common)
    noise = score(np.random.default_rng(0).integers(0, 256, (300, 32, 32, 3), dtype=np.uint8), **common)
    assert real.reference_cached is False and noise.reference_cached is True
    assert real.metrics[KEY_FID] < noise.metrics[KEY_FID]
    assert real.metrics[KEY_KID_MEAN] < noise.metrics[KEY_KID_MEAN]
    assert real.metrics[KEY_RECALL] > noise.metrics[KEY_RECALL]
    assert len(real.per_class) == 10
