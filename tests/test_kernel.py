"""Kernel: energies, models, checkpoints, file helpers."""

import json
import os

import pytest
import torch
import torch.nn.functional as F

from robustgen.checkpoint import load_checkpoint, model_meta, read_checkpoint, save_checkpoint
from robustgen.data import load_dataset
from robustgen.energy import cross_entropy_from_energies, delta_energies, joint_energy, marginal_energy
from robustgen.errors import RobustgenError
from robustgen.io import append_jsonl, atomic_path, atomic_write_json, parse_eps, read_jsonl
from robustgen.models import build_model, model_names


def test_cross_entropy_is_joint_minus_marginal_energy():
    logits = torch.randn(64, 10) * 5
    y = torch.randint(0, 10, (64,))
    expected = F.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(joint_energy(logits, y) - marginal_energy(logits), expected, atol=1e-5)
    assert torch.allclose(cross_entropy_from_energies(logits, y), expected, atol=1e-5)


def test_marginal_energy_is_below_every_joint_energy():
    # logsumexp >= max, so E(x) <= E(x, y) for every y: CE is never negative.
    logits = torch.randn(32, 7)
    for k in range(7):
        assert (marginal_energy(logits) <= joint_energy(logits, torch.full((32,), k)) + 1e-6).all()


def test_delta_energies_signs_follow_definition():
    nat = torch.tensor([[2.0, 0.0]])
    adv = torch.tensor([[3.0, 1.0]])  # x* has higher logits -> lower energy -> positive deltas
    d_marginal, d_joint = delta_energies(nat, adv, torch.tensor([0]))
    assert d_marginal.item() == pytest.approx((-torch.logsumexp(nat, 1) + torch.logsumexp(adv, 1)).item())
    assert d_joint.item() == pytest.approx(1.0)
    assert d_marginal.item() > 0


@pytest.mark.parametrize("name", ["preact-resnet18", "wide-resnet"])
def test_model_forward_is_head_of_features(name):
    args = dict(num_classes=5, in_channels=3, mean=[0.5] * 3, std=[0.25] * 3)
    args.update(width=8) if name == "preact-resnet18" else args.update(depth=10, widen_factor=1)
    model = build_model(name, **args).eval()
    x = torch.rand(4, 3, 16, 16)
    feats = model.features(x)
    assert feats.shape == (4, model.feature_dim)
    assert torch.allclose(model(x), model.head(feats))


def test_preact_resnet18_has_standard_widths():
    model = build_model("preact-resnet18", num_classes=10, in_channels=3)
    convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert sorted(set(convs)) == [64, 128, 256, 512]
    assert model.feature_dim == 512
    assert 11_000_000 < sum(p.numel() for p in model.parameters()) < 11_300_000  # the usual 11.17M


def test_normalisation_lives_inside_the_model():
    a = build_model("preact-resnet18", num_classes=3, in_channels=1, width=4, mean=[0.0], std=[1.0]).eval()
    b = build_model("preact-resnet18", num_classes=3, in_channels=1, width=4, mean=[0.5], std=[2.0]).eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if k not in ("mean", "std")}, strict=False)
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(b(x), a((x - 0.5) / 2.0), atol=1e-5)


def test_unknown_model_is_a_user_error():
    with pytest.raises(RobustgenError, match="unknown architecture"):
        build_model("resnet9000")
    assert "preact-resnet18" in model_names()


def _tiny_checkpoint(path, **overrides):
    data = load_dataset("digits")
    arch_args = dict(num_classes=10, in_channels=1, width=4, mean=list(data.mean), std=list(data.std))
    arch_args.update(overrides)
    model = build_model("preact-resnet18", **arch_args)
    save_checkpoint(path, model=model, meta={**model_meta(arch="preact-resnet18", arch_args=arch_args, dataset=data), "epoch": 3})
    return model


def test_checkpoint_round_trip_is_exact_and_weights_only(tmp_path):
    model = _tiny_checkpoint(tmp_path / "m.pt").eval()
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))
    assert meta["epoch"] == 3 and meta["classes"][3] == "3" and meta["input_shape"] == [1, 8, 8]
    assert "torch" in meta["versions"]
    payload = torch.load(tmp_path / "m.pt", weights_only=True)  # never needs arbitrary unpickling
    assert payload["format"] == "robustgen-checkpoint"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_foreign_and_corrupt_checkpoints_give_one_clear_error(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "plain.pt")
    with pytest.raises(RobustgenError, match="not a robustgen checkpoint"):
        read_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(RobustgenError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(RobustgenError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_of_other_shape_names_the_mismatch(tmp_path):
    _tiny_checkpoint(tmp_path / "m.pt")
    payload = read_checkpoint(tmp_path / "m.pt")
    from robustgen.checkpoint import load_weights

    other = build_model("preact-resnet18", num_classes=7, in_channels=1, width=4)
    with pytest.raises(RobustgenError, match="head.weight .* in the model"):
        load_weights(other, payload["state_dict"], source="m.pt")


@pytest.mark.parametrize(
    "text, value",
    [("8/255", 8 / 255), ("0.031", 0.031), ("16 / 255", 16 / 255), (".5", 0.5), (0.1, 0.1)],
)
def test_parse_eps_accepts_numbers_and_fractions(text, value):
    assert parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["8/256x", "eight", "8", "1/0", "-0.1", ""])
def test_parse_eps_rejects_bad_input_with_a_fix(text):
    with pytest.raises(RobustgenError, match="eps"):
        parse_eps(text)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}


def test_jsonl_reader_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"epoch": 1})
    append_jsonl(path, {"epoch": 2})
    with open(path, "a") as fh:
        fh.write('{"epoch": 3, "lo')
    assert [r["epoch"] for r in read_jsonl(path)] == [1, 2]


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    atomic_write_json(tmp_path / "a.json", {})
    mode = (tmp_path / "a.json").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
