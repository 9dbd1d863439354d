"""Kernel: energies, models, checkpoints, file helpers."""

import json
import os

import pytest
import torch
import torch.nn.functional as F

from robustgen.kernel.models.checkpoint import load_checkpoint, model_meta, read_checkpoint, save_checkpoint
from robustgen.kernel.data import load_dataset
from robustgen.kernel.energy import cross_entropy_from_energies, delta_energies, joint_energy, marginal_energy
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import append_jsonl, atomic_path, atomic_write_json, read_jsonl
from robustgen.kernel.threat import parse_eps
from robustgen.kernel.models import build_model, model_names


def test_fast_bf16_follows_the_onednn_isa_cap(monkeypatch):
    """ONEDNN_MAX_CPU_ISA below AVX512_CORE_BF16 makes oneDNN emulate bf16, so --precision auto then means fp32:
    capping the ISA reproduces an older CPU faithfully (issue 20)."""
    from robustgen.kernel.device import fast_bf16, resolve_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)  # an AVX512-BF16 CPU, whatever runs the test
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    for cap, fast in (("", True), ("AVX512_CORE_BF16", True), ("avx512_core_amx", True), ("AVX512_CORE", False), ("AVX2", False), ("SSE41", False)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert fast_bf16(cpu) is fast and resolve_precision("auto", cpu) == ("bf16" if fast else "fp32"), cap


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
    from robustgen.kernel.models.checkpoint import load_weights

    other = build_model("preact-resnet18", num_classes=7, in_channels=1, width=4)
    with pytest.raises(RobustgenError, match="head.weight .* in the model"):
        load_weights(other, payload["state_dict"], source="m.pt")


@pytest.mark.parametrize(
    "text, value",
    [("8/255", 8 / 255), ("0.031", 0.031), ("16 / 255", 16 / 255), (".5", 0.5), (0.1, 0.1), ("1e-3", 1e-3),
     ("2.5E-2", 0.025), ("8e0/255", 8 / 255), ("0", 0.0)],
)
def test_parse_eps_accepts_numbers_and_fractions(text, value):
    assert parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["8/256x", "eight", "8", "1/0", "-0.1", "", "nan", "inf", float("nan"), "1e400", True])
def test_parse_eps_rejects_bad_input_with_a_fix(text):
    with pytest.raises(RobustgenError, match="eps"):
        parse_eps(text)


def test_parse_eps_allows_l2_radii_above_one_and_names_the_option():
    assert parse_eps("1.5", norm="L2") == 1.5 and parse_eps("2", norm=None) == 2.0
    with pytest.raises(RobustgenError, match="--step-size '-1' is negative"):
        parse_eps("-1", norm="L2", name="--step-size")
    with pytest.raises(RobustgenError, match="outside pixel space"):
        parse_eps("1.5", norm="Linf")


def test_eps_click_type_follows_the_commands_norm():
    import click
    from click.testing import CliRunner

    from robustgen.cli.common import EPS

    @click.command()
    @click.option("--norm", default="Linf", is_eager=True)
    @click.option("--eps", type=EPS)
    def cmd(norm, eps):
        click.echo(repr(eps))

    runner = CliRunner()
    assert runner.invoke(cmd, ["--eps", "1e-3"]).output.strip() == "0.001"
    assert runner.invoke(cmd, ["--eps", "1.5", "--norm", "L2"]).output.strip() == "1.5"
    refused = runner.invoke(cmd, ["--eps", "1.5"])
    assert refused.exit_code == 2 and "outside pixel space" in refused.output


@pytest.mark.parametrize(
    "name, safe", [("cat", "cat"), ("cat food", "cat_food"), ("../../etc", "etc"), ("..", "_"), (".hidden", "hidden"), ("a/b:c", "a_b_c"), ("é", "_")]
)
def test_safe_name_keeps_names_inside_their_folder(name, safe):
    from robustgen.kernel.io import safe_name

    assert safe_name(name) == safe
    assert safe_name("..", fallback="3") == "3"


def test_one_json_encoder_for_files_and_stdout(tmp_path):
    import dataclasses

    import numpy as np

    from robustgen.kernel.io import dumps_json, to_jsonable

    @dataclasses.dataclass
    class Point:
        x: int

    value = {"p": tmp_path, "a": np.arange(3), "s": np.float32(0.5), "t": torch.tensor([1, 2]), "set": {2, 1},
             "tup": (1, 2), "dc": Point(3), "dev": torch.device("cpu"), "dt": torch.float32}
    assert to_jsonable(value) == {"p": str(tmp_path), "a": [0, 1, 2], "s": 0.5, "t": [1, 2], "set": [1, 2], "tup": [1, 2],
                                  "dc": {"x": 3}, "dev": "cpu", "dt": "torch.float32"}
    assert dumps_json({"b": 1, "a": 2}, indent=None) == '{"a": 2, "b": 1}'
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        dumps_json(object())


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


def test_importing_the_kernel_never_touches_the_umask(tmp_path):
    import subprocess
    import sys

    code = (
        "import os\n"
        "def refuse(*a): raise AssertionError('umask called')\n"
        "os.umask = refuse\n"
        "from robustgen.kernel.io import atomic_write_json\n"
        f"atomic_write_json({str(tmp_path / 'x.json')!r}, {{}})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert (tmp_path / "x.json").read_text() == "{}\n"


def test_full_disk_during_an_atomic_write_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    import robustgen.kernel.io as rio

    target = tmp_path / "last.pt"
    target.write_bytes(b"previous")

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RobustgenError, match=r"^no space left on device while writing .*last.pt: free space or choose another --out$"):
        with rio.atomic_path(target) as tmp:
            tmp.write_bytes(b"ne")
            full(tmp)  # the disk fills up half way through the write
    assert target.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    monkeypatch.setattr(rio, "_fsync", full)  # or only when the data is flushed
    with pytest.raises(RobustgenError, match="no space left on device while writing .*last.pt"):
        rio.atomic_write_bytes(target, b"new", fsync=True)
    with pytest.raises(RobustgenError, match="no space left on device while writing .*run.json"):
        rio.atomic_write_json(tmp_path / "run.json", {})
    assert target.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    cache_file = rio.default_cache_dir() / "init" / "x.npz"
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with pytest.raises(RobustgenError, match="no space left on device while writing .*x.npz: free space or set ROBUSTGEN_CACHE"):
        rio.atomic_write_bytes(cache_file, b"x", fsync=True)


def test_full_disk_while_appending_a_jsonl_line_cuts_the_file_back(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 0})
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RobustgenError, match="no space left on device while writing .*metrics.jsonl"):
        append_jsonl(path, {"epoch": 1})
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_unwritable_cache_names_robustgen_cache_not_out(tmp_path, monkeypatch):
    from robustgen.kernel.io import ensure_writable_dir

    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("ROBUSTGEN_CACHE", str(blocker))
    with pytest.raises(RobustgenError, match=r"cannot write to the robustgen cache .*set ROBUSTGEN_CACHE to a writable directory") as info:
        ensure_writable_dir(blocker / "init")
    assert "--out" not in str(info.value)
    (tmp_path / "out-file").write_text("")
    with pytest.raises(RobustgenError, match=r"cannot write to output directory .*out-file.* \(it is a file\): choose another --out"):
        ensure_writable_dir(tmp_path / "out-file")


def test_clean_stale_temps_removes_only_temp_files(tmp_path):
    from robustgen.kernel.io import clean_stale_temps

    keep = ["last.pt", ".lock", "notes.tmp", ".hidden", "a.tmp.json"]
    stale = [".last.pt.ab12cd34.tmp", ".metrics.jsonl.x9_kq.tmp"]
    for name in keep + stale:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / ".shard-0.npz.0a1b2c3d.tmp").write_bytes(b"x")
    assert sorted(p.name for p in clean_stale_temps(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["shards"])
    assert [p.name for p in clean_stale_temps(tmp_path, recursive=True)] == [".shard-0.npz.0a1b2c3d.tmp"]
    assert clean_stale_temps(tmp_path / "missing") == []


def test_a_killed_atomic_write_leaves_a_temp_that_clean_stale_temps_finds(tmp_path):
    from robustgen.kernel.io import clean_stale_temps

    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "last.pt") as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt  # the context manager cleans up; only SIGKILL leaves the temp behind
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".last.pt.deadbeef.tmp").write_bytes(b"half")  # what SIGKILL leaves
    assert [p.name for p in clean_stale_temps(tmp_path)] == [".last.pt.deadbeef.tmp"]


def test_run_dir_lock_admits_one_writer(tmp_path):
    from robustgen.kernel.io import run_dir_lock

    run = tmp_path / "run"
    with run_dir_lock(run):
        assert (run / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(RobustgenError, match=rf"^another robustgen process is writing {run} \(pid {os.getpid()}\): wait for it or choose another --out$"):
            with run_dir_lock(run):
                pass
        (run / "out.txt").write_text("x")
    assert sorted(p.name for p in run.iterdir()) == ["out.txt"]  # the lock file goes, the work stays
    with run_dir_lock(run):  # free again
        pass
    with run_dir_lock(tmp_path / "unused"):
        pass
    assert not (tmp_path / "unused").exists()  # created for the lock, empty: removed again


def test_run_dir_lock_is_held_by_another_process_and_freed_when_it_dies(tmp_path):
    import signal
    import subprocess
    import sys

    from robustgen.kernel.io import run_dir_lock

    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time\nfrom robustgen.kernel.io import run_dir_lock\nwith run_dir_lock({str(run)!r}):\n    print('locked', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RobustgenError, match=rf"another robustgen process is writing .*run \(pid {holder.pid}\)"):
            with run_dir_lock(run):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_dir_lock(run):  # the OS released the dead holder's lock; its stale .lock file is reused
        assert (run / ".lock").read_text().strip() == str(os.getpid())


def test_robustgen_error_is_always_one_line():
    assert str(RobustgenError("first\nsecond\n")) == "first second"


def test_checkpoint_given_as_a_directory_points_at_the_file(tmp_path):
    _tiny_checkpoint(tmp_path / "best.pt")
    with pytest.raises(RobustgenError, match=rf"checkpoint {tmp_path} is a directory: pass the checkpoint file itself, e.g. {tmp_path / 'best.pt'}"):
        read_checkpoint(tmp_path)


def _edited_checkpoint(tmp_path, edit):
    _tiny_checkpoint(tmp_path / "ok.pt")
    payload = torch.load(tmp_path / "ok.pt", weights_only=True)
    edit(payload)
    torch.save(payload, tmp_path / "edited.pt")
    return tmp_path / "edited.pt"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.pop("meta"), "has no meta"),
        (lambda p: p.update(meta="x"), "has no meta"),
        (lambda p: p.pop("state_dict"), "no state_dict"),
        (lambda p: p["meta"].pop("arch"), "meta lacks arch"),
        (lambda p: p["meta"].update(arch="resnet9000"), "names architecture 'resnet9000', which this robustgen does not know"),
        (lambda p: p["meta"].update(arch=["x"]), "does not know"),
        (lambda p: p["meta"].update(arch_args=[1, 2]), "arch_args is not a dict"),
        (lambda p: p["meta"].update(classes="0123"), "classes is not a list"),
        (lambda p: p["meta"].update(input_shape=[1, 8]), r"input_shape is not \[C, H, W\]"),
        (lambda p: p["meta"]["arch_args"].update(num_classes=7), "does not fit this architecture"),
        (lambda p: p["meta"].update(classes=["a"] * 7), "the model has 10 classes and 1 channels but meta lists 7 class names"),
        (lambda p: p.update(format_version="2"), "format_version '2' is not a number"),
    ],
)
def test_hand_built_checkpoints_give_one_line(tmp_path, edit, message):
    path = _edited_checkpoint(tmp_path, edit)
    with pytest.raises(RobustgenError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize("bad_args", [{"bogus": 1}, {"width": "wide"}, {"width": -3}])
def test_arch_args_the_model_cannot_take_give_one_line(tmp_path, bad_args):
    path = _edited_checkpoint(tmp_path, lambda p: p["meta"]["arch_args"].update(bad_args))
    with pytest.raises(RobustgenError, match="cannot build preact-resnet18 from its arch_args .*use a checkpoint written by this robustgen"):
        load_checkpoint(path)
