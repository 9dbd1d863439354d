"""Memorisation measures, FID against the test split, parity with torch-fidelity, and the score cache.

The digits cases use a randomly initialised width-4 PreActResNet-18 as extractor: features of
identical images are identical, which is all the constructed cases need.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustgen.kernel.errors import RobustgenError
from samplers.scoring import (
    KEY_DATA_COPYING_FEATURES, KEY_DATA_COPYING_PIXEL, KEY_F_SCORE, KEY_FID, KEY_FID_TEST, KEY_IS_MEAN, KEY_IS_STD, KEY_KID_MEAN,
    KEY_NEAR_COPY_FRACTION_FEATURES, KEY_NEAR_COPY_FRACTION_PIXEL, KEY_NN_RATIO_FEATURES, KEY_NN_RATIO_PIXEL, KEY_PRECISION, KEY_RECALL,
    score,
)
from samplers.scoring.memorisation import (
    Vectors, data_copying_test, mann_whitney_z, nearest_neighbours, nn_block_bytes, nn_chunk_sizes, pixel_vectors,
)
from test_scoring import _digits_checkpoint, frechet, pixel_checkpoint, to_images

MEMORISATION_KEYS = {KEY_NN_RATIO_PIXEL, KEY_NN_RATIO_FEATURES, KEY_NEAR_COPY_FRACTION_PIXEL, KEY_NEAR_COPY_FRACTION_FEATURES,
                     KEY_DATA_COPYING_PIXEL, KEY_DATA_COPYING_FEATURES}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits_extractor(tmp_path_factory, digits):
    return _digits_checkpoint(tmp_path_factory.mktemp("extractor") / "w4.pt", digits)


def digits_score(images, extractor, cache_dir, **kw):
    kw.setdefault("metrics", ("fid",))
    return score(images, ref="digits", features=extractor, cache_dir=cache_dir, per_class=False, **kw)


# --------------------------------------------------------------------------- nearest neighbours


@pytest.mark.parametrize("chunks", [(1, 1), (7, 13), (64, 5), (1000, 1000), None])
def test_chunked_nearest_neighbours_equal_brute_force(chunks):
    rng = np.random.default_rng(0)
    queries, keys = rng.integers(0, 256, (53, 48), dtype=np.uint8), rng.integers(0, 256, (101, 48), dtype=np.uint8)
    keys[17] = queries[3]  # an exact copy: distance exactly 0
    q64, k64 = queries.astype(np.float64) / 255, keys.astype(np.float64) / 255
    brute = np.linalg.norm(q64[:, None, :] - k64[None, :, :], axis=2)
    distance, index = nearest_neighbours(Vectors(queries, 1 / 255), Vectors(keys, 1 / 255), device=CPU, chunks=chunks)
    assert np.array_equal(index, brute.argmin(1))
    assert np.allclose(distance, brute.min(1), rtol=0, atol=1e-12)
    assert distance[3] == 0.0 and index[3] == 17


def test_nearest_neighbours_ties_go_to_the_lowest_index_across_chunks():
    keys = np.zeros((10, 4), np.float32)  # every key at the same distance
    _, index = nearest_neighbours(Vectors(np.ones((3, 4), np.float32)), Vectors(keys), device=CPU, chunks=(2, 3))
    assert index.tolist() == [0, 0, 0]


@pytest.mark.parametrize("n, dim, budget", [(50_000, 3072, 256 * 2**20), (50_000, 2048, 64 * 2**20), (10, 64, 2**20), (50_000, 3072, 2**16)])
def test_chunk_sizes_respect_the_memory_budget(n, dim, budget):
    q, k = nn_chunk_sizes(n, dim, budget)
    assert 1 <= q <= n and k >= 1
    assert nn_block_bytes(q, k, dim) <= budget or (q, k) == (1, 1)
    if budget >= 64 * 2**20:
        assert nn_block_bytes(q, k, dim) >= 0.9 * budget  # and the blocks use the budget (no needlessly small blocks)


def test_the_search_holds_no_more_than_its_budget_in_the_tensors_it_really_builds(monkeypatch):
    """Measured on the tensors nearest_neighbours hands to cdist and gets back (not on the formula that chose the chunks):
    query and key rows twice (theirs and cdist's norm-augmented copies) and three (q x k) matrices."""
    import samplers.scoring.memorisation as memorisation

    budget, seen, cdist = 2**18, [], torch.cdist

    def measured(a, b, **kw):
        out = cdist(a, b, **kw)
        seen.append(2 * (a.numel() * a.element_size() + b.numel() * b.element_size()) + 3 * out.numel() * out.element_size())
        return out

    monkeypatch.setattr(memorisation.torch, "cdist", measured)
    rng = np.random.default_rng(0)
    queries, keys = rng.random((300, 50), dtype=np.float32), rng.random((700, 50), dtype=np.float32)
    distance, index = nearest_neighbours(Vectors(queries), Vectors(keys), device=CPU, memory_bytes=budget)
    assert len(seen) > 1 and max(seen) <= budget  # chunked, and every chunk within the budget
    brute = np.linalg.norm(queries[:, None].astype(np.float64) - keys[None].astype(np.float64), axis=2)
    assert np.array_equal(index, brute.argmin(1)) and np.allclose(distance, brute.min(1))


# --------------------------------------------------------------------------- C_T


def test_mann_whitney_z_matches_scipy_u_and_its_sign():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(1)
    generated, test = rng.normal(0.0, 1, 40), rng.normal(0.3, 1, 55)
    u = mannwhitneyu(generated, test, alternative="two-sided", method="asymptotic", use_continuity=False).statistic
    assert mann_whitney_z(generated, test) == pytest.approx((u - 40 * 55 / 2) / np.sqrt(40 * 55 * 96 / 12))
    assert mann_whitney_z(test * 0 + 0.0, np.ones(10)) < 0  # generated closer than test: copying side
    assert mann_whitney_z(test, test) == pytest.approx(0.0)


def test_data_copying_test_weights_by_test_fraction_and_skips_thin_cells():
    rng = np.random.default_rng(2)
    test_cells, test_distance = np.repeat([0, 1, 2], [60, 30, 10]), rng.uniform(1, 2, 100)
    sample_cells = np.repeat([0, 1, 2], [25, 25, 5])  # cell 2 holds 5 < 20 samples: left out
    sample_distance = np.concatenate([np.zeros(25), np.full(25, 5.0), np.zeros(5)])
    result = data_copying_test(sample_cells=sample_cells, sample_distance=sample_distance, test_cells=test_cells,
                               test_distance=test_distance, n_cells=3, min_cell_samples=20)
    z0, z1 = mann_whitney_z(np.zeros(25), test_distance[:60]), mann_whitney_z(np.full(25, 5.0), test_distance[60:90])
    assert z0 < 0 < z1
    assert result.cells_used == 2 and result.test_fraction_used == pytest.approx(0.9)
    assert result.statistic == pytest.approx((0.6 * z0 + 0.3 * z1) / 0.9)
    none = data_copying_test(sample_cells=np.zeros(5, int), sample_distance=np.zeros(5), test_cells=test_cells, test_distance=test_distance, n_cells=3)
    assert none.statistic is None and "generate more samples" in none.reading


# --------------------------------------------------------------------------- constructed cases, end to end


def test_training_images_as_samples_are_copies(digits, digits_extractor, tmp_path):
    result = digits_score(digits.x_train, digits_extractor, tmp_path)
    m, memo = result.metrics, result.memorisation
    assert m[KEY_NN_RATIO_PIXEL] == 0.0 and m[KEY_NN_RATIO_FEATURES] == 0.0
    assert m[KEY_NEAR_COPY_FRACTION_PIXEL] == 1.0 and m[KEY_NEAR_COPY_FRACTION_FEATURES] == 1.0
    # U = 0 in every cell: Z_U = -sqrt(3mn / (m + n + 1)), about -7 for ~80 samples and ~20 test images per cell
    assert m[KEY_DATA_COPYING_PIXEL] < -5 and m[KEY_DATA_COPYING_FEATURES] < -5
    assert "data-copying" in memo.spaces["pixels"].copying.reading
    assert np.all(memo.spaces["pixels"].nn_distance == 0)
    assert len(memo.pairs) == 8 and all(p.distance == 0 for p in memo.pairs)
    assert np.array_equal(memo.pair_sample_images, memo.pair_train_images)  # a copy's nearest training image is itself
    assert memo.spaces["pixels"].copying.n_cells == 18  # min(50, 360 test images // 20)


def test_real_held_out_images_as_samples_read_as_real_data(digits, digits_extractor, tmp_path):
    result = digits_score(digits.x_test, digits_extractor, tmp_path)
    m = result.metrics
    assert m[KEY_NN_RATIO_PIXEL] == pytest.approx(1.0) and m[KEY_NN_RATIO_FEATURES] == pytest.approx(1.0)
    assert m[KEY_NEAR_COPY_FRACTION_PIXEL] == pytest.approx(0.01, abs=0.005)  # 1% by construction
    assert m[KEY_NEAR_COPY_FRACTION_FEATURES] == pytest.approx(0.01, abs=0.005)
    assert m[KEY_DATA_COPYING_PIXEL] == pytest.approx(0.0, abs=1e-9)  # identical distances in every cell: Z_U = 0
    assert "no evidence of data-copying" in result.memorisation.spaces["features"].copying.reading
    # a different half of the real images (not the yardstick itself): still about as novel as real data
    half = digits_score(digits.x_test[::2], digits_extractor, tmp_path)
    assert 0.8 < half.metrics[KEY_NN_RATIO_PIXEL] < 1.25 and half.metrics[KEY_NEAR_COPY_FRACTION_PIXEL] < 0.03


def test_noisy_training_images_sit_between_copies_and_real_data(digits, digits_extractor, tmp_path):
    rng = np.random.default_rng(0)
    noisy = np.clip(digits.x_train[:400].astype(int) + rng.integers(-3, 4, digits.x_train[:400].shape), 0, 255).astype(np.uint8)
    m = digits_score(noisy, digits_extractor, tmp_path).metrics
    assert 0 < m[KEY_NN_RATIO_PIXEL] < 0.5 and m[KEY_NEAR_COPY_FRACTION_PIXEL] > 0.5


def test_memorisation_is_on_by_default_and_can_be_switched_off(digits, digits_extractor, tmp_path):
    off = digits_score(digits.x_test[:50], digits_extractor, tmp_path, metrics=("is",), memorisation=False)
    assert off.memorisation is None and not MEMORISATION_KEYS & set(off.metrics)
    on = digits_score(digits.x_test[:50], digits_extractor, tmp_path, metrics=("is",))
    assert on.memorisation is not None and {KEY_NN_RATIO_PIXEL, KEY_NN_RATIO_FEATURES} <= set(on.metrics)
    assert "memorisation" in on.to_dict() and on.splits[KEY_NN_RATIO_PIXEL].startswith("train")
    no_ref = score(digits.x_test[:50], features=digits_extractor, metrics=("is",), cache=False)
    assert no_ref.memorisation is None and any("memorisation not measured" in n for n in no_ref.notes)


# --------------------------------------------------------------------------- fid_test


def test_fid_test_beside_fid_whenever_a_test_split_exists(tmp_path):
    rng = np.random.default_rng(0)
    k = 10
    train, test, gen = (to_images(mu + 20 * rng.normal(size=(300, k))) for mu in (100, 120, 110))
    np.savez(tmp_path / "ref.npz", x_train=train, y_train=np.arange(300) % k, x_test=test, y_test=np.arange(300) % k)
    result = score(gen, ref=f"npz:{tmp_path / 'ref.npz'}", features=pixel_checkpoint(tmp_path / "p.pt", k), metrics=("fid",), cache_dir=tmp_path / "c")
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    assert result.metrics[KEY_FID] == pytest.approx(frechet(flat(gen), flat(train)), rel=1e-5)
    assert result.metrics[KEY_FID_TEST] == pytest.approx(frechet(flat(gen), flat(test)), rel=1e-5)
    assert result.metrics[KEY_FID_TEST] != pytest.approx(result.metrics[KEY_FID], rel=1e-3)
    assert result.splits[KEY_FID] == "train" and result.splits[KEY_FID_TEST] == "test"
    saved = json.loads(result.save(tmp_path / "score.json").read_text())
    assert saved["splits"][KEY_FID_TEST] == "test" and saved["metrics"][KEY_FID_TEST] == result.metrics[KEY_FID_TEST]


def test_fid_test_on_digits_and_absent_with_a_note_without_test_split(digits, digits_extractor, tmp_path, monkeypatch):
    from samplers.scoring import format_result

    with_test = digits_score(digits.x_test[:100], digits_extractor, tmp_path)
    assert np.isfinite(with_test.metrics[KEY_FID_TEST])
    table = format_result(with_test)
    assert "FID (test split)" in table and "vs split" in table and "Memorisation" in table

    import samplers.scoring.inputs as inputs

    # The registry now refuses datasets with an empty split; a reference with only a train split can still
    # reach the scorer through the API (load_reference_splits leaves empty splits out), so test that path.
    train_only = {"train": inputs.Reference("digits", "train", digits.x_train, digits.y_train, digits.classes, "f" * 64)}
    monkeypatch.setattr(inputs, "load_reference_splits", lambda spec, data_root=None, model_meta=None: train_only)
    without = digits_score(digits.x_test[:100], digits_extractor, tmp_path)
    assert KEY_FID in without.metrics and KEY_FID_TEST not in without.metrics
    assert any("fid_test not computed" in n and "no test split" in n for n in without.notes)
    assert without.memorisation is None and any("memorisation not measured" in n for n in without.notes)


# --------------------------------------------------------------------------- parity with torch-fidelity


class _UInt8CHW(torch.utils.data.Dataset):
    """The input torch-fidelity's calculate_metrics reads: uint8 CHW tensors."""

    def __init__(self, images_nhwc):
        self.images = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].contiguous()


def test_features_to_metrics_equals_calculate_metrics(digits, digits_extractor, tmp_path):
    from torch_fidelity import calculate_metrics

    ours = score(digits.x_test, ref="digits", features=digits_extractor, metrics=("is", "fid", "kid", "prc"), kid_subset_size=200,
                 batch_size=64, cache_dir=tmp_path, per_class=False, memorisation=False, device="cpu")
    theirs = calculate_metrics(
        input1=_UInt8CHW(digits.x_test), input2=_UInt8CHW(digits.x_train), isc=True, fid=True, kid=True, prc=True,
        feature_extractor=ours.extractor.name, batch_size=64, cuda=False, cache=False, verbose=False, save_cpu_ram=True,
        rng_seed=2020, isc_splits=10, kid_subset_size=200, prc_neighborhood=3,
    )
    pairs = {KEY_IS_MEAN: "inception_score_mean", KEY_IS_STD: "inception_score_std", KEY_FID: "frechet_inception_distance",
             KEY_KID_MEAN: "kernel_inception_distance_mean", "kid_std": "kernel_inception_distance_std", KEY_PRECISION: "precision", KEY_RECALL: "recall", KEY_F_SCORE: "f_score"}
    assert 0 < theirs["precision"] < 1 and theirs["frechet_inception_distance"] > 0  # not a degenerate comparison
    for ours_key, theirs_key in pairs.items():
        assert ours.metrics[ours_key] == pytest.approx(theirs[theirs_key], rel=1e-6, abs=1e-9), ours_key


# --------------------------------------------------------------------------- the cache


def test_corrupt_cache_entries_are_recomputed_and_replaced(digits, digits_extractor, tmp_path):
    from robustgen.cli import main

    cache = tmp_path / "cache"
    first = digits_score(digits.x_test[:100], digits_extractor, cache)
    entries = sorted(cache.glob("rg-*.npz"))
    assert len(entries) == 4  # train and test features, and the training side in pixels and in features
    entries[0].write_bytes(b"garbage, not a zip")
    entries[1].write_bytes(entries[1].read_bytes()[:40])  # truncated
    np.savez(entries[2], something_else=np.zeros(3))  # readable, wrong arrays
    second = digits_score(digits.x_test[:100], digits_extractor, cache)
    assert second.metrics == pytest.approx(first.metrics, rel=1e-9)
    repaired = [n for n in second.notes if "was unreadable: recomputed and replaced" in n]
    assert len(repaired) == 3
    third = digits_score(digits.x_test[:100], digits_extractor, cache)  # the entries were replaced by good ones
    assert third.reference_cached and third.memorisation.cached and not any("unreadable" in n for n in third.notes)

    np.save(tmp_path / "x.npy", np.zeros(1))
    entries[3].write_bytes((tmp_path / "x.npy").read_bytes())  # a .npy where an .npz belongs
    np.savez(tmp_path / "samples.npz", images=digits.x_test[:100])
    out = CliRunner().invoke(main, ["score", str(tmp_path / "samples.npz"), "--ref", "digits", "--features", str(digits_extractor),
                                    "--metrics", "fid", "--cache-dir", str(cache)])
    assert out.exit_code == 0, out.output
    assert "Traceback" not in out.output and "recomputed and replaced" in out.output


# --------------------------------------------------------------------------- score.json, memorisation.npz, CLI, report


def test_cli_writes_memorisation_npz_and_the_report_shows_the_pairs(digits, digits_extractor, tmp_path):
    from robustgen.cli import main
    from robustgen.app.report import build_report

    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "samples.npz", images=digits.x_train[:40], labels=digits.y_train[:40])
    (run / "meta.json").write_text(json.dumps({"dataset": "digits", "n": 40}))
    out = CliRunner().invoke(main, ["score", str(run), "--features", str(digits_extractor), "--metrics", "fid", "--cache-dir", str(tmp_path / "c")])
    assert out.exit_code == 0, out.output
    assert "Memorisation" in out.output and "near-copies" in out.output and "C_T" in out.output
    saved = json.loads((run / "score.json").read_text())
    assert saved["memorisation"]["file"] == "memorisation.npz" and len(saved["memorisation"]["closest_pairs"]) == 8
    assert saved["metrics"][KEY_NEAR_COPY_FRACTION_PIXEL] == 1.0
    with np.load(run / "memorisation.npz", allow_pickle=False) as z:
        assert z["pair_sample_images"].shape == (8, 8, 8, 1) and z["nn_distance_pixels"].shape == (40,)
        assert np.array_equal(z["pair_train_images"], digits.x_train[z["pair_train_index"]])
    page = build_report(run).read_text()
    assert "Memorisation" in page and 'class="pairs"' in page and "Meehan" in page and "fid_test: vs test" in page

    no_memo = CliRunner().invoke(main, ["score", str(run), "--features", str(digits_extractor), "--metrics", "fid", "--no-memorisation",
                                        "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "dir") + "/", "--json"])
    assert no_memo.exit_code == 0, no_memo.output
    assert json.loads(no_memo.output)["memorisation"] is None and (tmp_path / "dir" / "score.json").is_file()


def test_save_refuses_a_directory(tmp_path, digits, digits_extractor):
    result = digits_score(digits.x_test[:30], digits_extractor, tmp_path / "c", memorisation=False)
    with pytest.raises(RobustgenError, match="is a directory"):
        result.save(tmp_path)


def test_pixel_vectors_are_flattened_unit_interval_pixels():
    images = np.array([[[[0], [255]], [[51], [102]]]], np.uint8)
    rows = pixel_vectors(images).rows(0, 1, CPU)
    assert rows.dtype == torch.float64 and rows.tolist() == [[0.0, 1.0, 0.2, 0.4]]
