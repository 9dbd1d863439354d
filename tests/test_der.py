"""The Delta Energy Regularizer: hinge at gamma, gradients through f(x) and f(x*), AAE masking."""

import pytest
import torch

from robustgen.kernel.energy import delta_energies
from robustgen.kernel.models import build_model
from training.config import TrainConfig, resolve_config
from training.der import abnormal_mask, delta_energy_norm, der_loss, der_penalty

from numerics import bf16_typical, bf16_worst_case, energy_scale, rounding_depth


def test_penalty_is_zero_below_gamma_and_has_no_gradient_there():
    logits_nat = torch.randn(8, 10, requires_grad=True)
    logits_adv = (logits_nat.detach() + 0.01 * torch.randn(8, 10)).requires_grad_(True)
    penalty = der_penalty(logits_nat, logits_adv, torch.arange(8) % 10, gamma=1.0)
    assert (penalty == 0).all()
    penalty.sum().backward()
    assert logits_nat.grad.abs().sum() == 0 and logits_adv.grad.abs().sum() == 0


def test_penalty_is_norm_minus_gamma_above_gamma_and_squared_option():
    nat = torch.tensor([[0.0, 0.0]])
    adv = torch.tensor([[3.0, 0.0]])  # E(x,y=0) drops by 3, E(x) drops by logsumexp change
    y = torch.tensor([0])
    d_m, d_j = delta_energies(nat, adv, y)
    norm = torch.sqrt(d_m**2 + d_j**2)
    assert der_penalty(nat, adv, y, gamma=1.0).item() == pytest.approx(norm.item() - 1.0, rel=1e-5)
    assert der_penalty(nat, adv, y, gamma=1.0, squared=True).item() == pytest.approx(norm.item() ** 2 - 1.0, rel=1e-5)
    assert delta_energy_norm(torch.zeros(3), torch.zeros(3)).sum() == 0


def test_gradient_is_finite_at_zero_delta():
    logits = torch.randn(4, 5, requires_grad=True)
    der_penalty(logits, logits, torch.zeros(4, dtype=torch.long), gamma=0.0).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_gradient_flows_into_the_weights_through_both_f_x_and_f_xstar():
    torch.manual_seed(0)
    model = build_model("preact-resnet18", num_classes=10, in_channels=1, width=4)
    x = torch.rand(6, 1, 8, 8)
    x_star = (x + 0.3 * torch.randn_like(x)).clamp(0, 1).detach()
    y = torch.arange(6)
    x_in = x.clone().requires_grad_(True)
    logits_nat, logits_adv = model(x_in), model(x_star)
    logits_nat.retain_grad()
    logits_adv.retain_grad()
    der_loss(der_penalty(logits_nat, logits_adv, y, gamma=0.0)).backward()
    assert logits_nat.grad.abs().sum() > 0 and logits_adv.grad.abs().sum() > 0
    assert sum(p.grad.abs().sum() for p in model.parameters() if p.grad is not None) > 0
    assert not x_star.requires_grad  # x* is a fixed input


def test_aae_mask_selects_samples_whose_loss_dropped():
    start = torch.tensor([1.0, 2.0, 0.5])
    adv = torch.tensor([1.5, 1.0, 0.5])
    assert abnormal_mask(start, adv).tolist() == [False, True, False]
    penalty = torch.tensor([4.0, 2.0, 6.0])
    assert der_loss(penalty, mask=abnormal_mask(start, adv)).item() == pytest.approx(2.0 / 3)  # mean over all N
    assert der_loss(penalty).item() == pytest.approx(4.0)


def _one_step(monkeypatch, mask_value, der):
    import training.step as step

    if mask_value is not None:
        monkeypatch.setattr(step, "abnormal_mask", lambda start, adv: torch.full_like(start, mask_value, dtype=torch.bool))
    torch.manual_seed(0)
    model = build_model("preact-resnet18", num_classes=10, in_channels=1, width=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    config = resolve_config(TrainConfig(method="fgsm", der=der, der_gamma=0.0, der_beta=10.0, eps=0.3, out="unused"))
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    stats = step.train_step(model, opt, x, y, config=config, epoch=0, precision="fp32")
    return torch.cat([p.detach().flatten() for p in model.parameters()]), stats


def test_single_step_der_only_touches_aaes(monkeypatch):
    baseline, _ = _one_step(monkeypatch, None, der=False)
    no_aae, stats = _one_step(monkeypatch, False, der=True)
    all_aae, stats_all = _one_step(monkeypatch, True, der=True)
    assert torch.equal(baseline, no_aae)  # no AAEs -> DER adds nothing
    assert not torch.allclose(baseline, all_aae)  # all AAEs -> DER changes the update
    assert stats["aae"] == 0 and stats_all["aae"] == 16 and stats_all["der_penalty"] > 0


def test_multi_step_der_starts_at_der_start():
    from training.step import der_active

    pgd = resolve_config(TrainConfig(method="pgd", der=True, der_start=3, out="unused"))
    assert [der_active(pgd, e) for e in range(5)] == [False, False, False, True, True]
    single = resolve_config(TrainConfig(method="fgsm-rs", der=True, der_start=3, out="unused"))
    assert der_active(single, 0)
    assert not der_active(resolve_config(TrainConfig(method="pgd", der=False, out="unused")), 10)


def test_delta_energies_under_bf16_stay_within_bf16_rounding_of_fp32_and_keep_the_hinge_decision(robust_digits_checkpoint, digits):
    """bf16 autocast (what --precision auto picks on AVX512-BF16/AMX CPUs and CUDA) runs the body in bf16 but the head in
    fp32, so DER sees the same delta energies. The tolerances come from bf16's unit roundoff u = 2**-8, the energies'
    scale (max |logit| + log K, per sample) and the number of rounded layers: never from a constant, since the fixture's
    weights (and so the size of the error) differ from CPU to CPU. What DER needs: the hinge at gamma decides the same
    way in bf16 and fp32 for every sample that is not within rounding of gamma."""
    from robustgen.kernel.models.checkpoint import load_checkpoint
    from robustgen.kernel.data import to_float
    from robustgen.kernel.device import autocast
    from training.attacks import fgsm
    from training.config import DER_GAMMA

    model, _ = load_checkpoint(robust_digits_checkpoint)
    x, y = to_float(digits.x_test[:200]), torch.as_tensor(digits.y_test[:200])
    x_adv = fgsm(model, x, y, eps=0.1)
    measured, logits = {}, []
    for precision in ("fp32", "bf16"):
        with torch.no_grad(), autocast(x.device, precision):
            nat, adv = model(x), model(x_adv)
        assert nat.dtype == torch.float32  # logits come out of the fp32 head either way
        measured[precision] = torch.stack(delta_energies(nat, adv, y))
        logits += [nat, adv]
    diff = (measured["bf16"] - measured["fp32"]).abs().amax(0)  # per sample, the worse of dE(x) and dE(x, y)
    depth, scale = rounding_depth(model), energy_scale(*logits)
    worst = bf16_worst_case(depth, scale, terms=2)  # dE is a difference of two energies, each rounded through the net
    assert diff.max() > 0  # bf16 really ran (emulated or native, every CPU rounds)
    assert (diff <= worst).all(), float((diff / worst).max())
    assert diff.mean() <= bf16_typical(depth, scale, terms=2).mean(), (float(diff.mean()), float(bf16_typical(depth, scale, terms=2).mean()))
    above = {p: delta_energy_norm(*measured[p]) > DER_GAMMA for p in measured}
    flipped = above["bf16"] != above["fp32"]
    near_gamma = (delta_energy_norm(*measured["fp32"]) - DER_GAMMA).abs() <= 2**0.5 * worst  # the norm moves <= |error vector|
    assert not (flipped & ~near_gamma).any(), int((flipped & ~near_gamma).sum())
