"""Attacks and threat models: projection, box constraints, loss increase, N-FGSM's exception."""

import pytest
import torch
import torch.nn.functional as F

from robustgen.kernel.models.checkpoint import load_checkpoint
from robustgen.kernel.data import to_float
from training.attacks import fgsm, fgsm_rs, fgsm_rs_with_start, fgsm_with_start, n_fgsm, pgd, pgd_with_start, trades_kl
from robustgen.kernel.threat import perturbation_norm, project, project_delta, steepest_ascent_step, uniform_in_ball

EPS = {"Linf": 0.1, "L2": 0.5}


@pytest.fixture(scope="module")
def model_and_batch(standard_digits_checkpoint, digits):
    model, _ = load_checkpoint(standard_digits_checkpoint)
    x = to_float(digits.x_test[:48])
    y = torch.as_tensor(digits.y_test[:48])
    return model, x, y


def _ce(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_projection_lands_in_ball_and_box_and_is_idempotent(norm):
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    x_far = x + torch.randn_like(x)
    p = project(x_far, x, eps=EPS[norm], norm=norm)
    assert (perturbation_norm(p, x, norm=norm) <= EPS[norm] + 1e-5).all()
    assert p.min() >= 0 and p.max() <= 1
    assert torch.allclose(project(p, x, eps=EPS[norm], norm=norm), p, atol=1e-6)
    delta = project_delta(torch.randn(4, 3, 8, 8) * 1e-4, eps=EPS[norm], norm=norm)  # inside: unchanged
    assert torch.allclose(project_delta(delta, eps=EPS[norm], norm=norm), delta)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_uniform_start_and_steps_have_the_right_size(norm):
    torch.manual_seed(0)
    like = torch.zeros(256, 1, 8, 8)
    noise = uniform_in_ball(like, radius=0.3, norm=norm)
    sizes = perturbation_norm(noise, like, norm=norm)
    assert (sizes <= 0.3 + 1e-5).all() and sizes.mean() > 0.1  # fills the ball, not just its centre
    step = steepest_ascent_step(torch.randn_like(like), step_size=0.2, norm=norm)
    assert torch.allclose(perturbation_norm(step, like, norm=norm), torch.full((256,), 0.2), atol=1e-5)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("attack", ["fgsm", "fgsm_rs", "pgd", "trades_kl"])
def test_attacks_stay_in_eps_ball_and_image_box(model_and_batch, attack, norm):
    model, x, y = model_and_batch
    torch.manual_seed(0)
    eps = EPS[norm]
    fn = {"fgsm": fgsm, "fgsm_rs": fgsm_rs, "pgd": pgd, "trades_kl": trades_kl}[attack]
    kwargs = {"steps": 3} if attack in ("pgd", "trades_kl") else {}
    x_adv = fn(model, x, y, eps=eps, norm=norm, **kwargs)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (perturbation_norm(x_adv, x, norm=norm) <= eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in model.parameters())  # attacks never leave gradients on the weights


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("attack", ["fgsm", "fgsm_rs", "pgd"])
def test_attacks_increase_the_loss(model_and_batch, attack, norm):
    model, x, y = model_and_batch
    torch.manual_seed(0)
    fn = {"fgsm": fgsm, "fgsm_rs": fgsm_rs, "pgd": pgd}[attack]
    kwargs = {"steps": 5} if attack == "pgd" else {}
    x_adv = fn(model, x, y, eps=EPS[norm], norm=norm, **kwargs)
    assert _ce(model, x_adv, y).mean() > _ce(model, x, y).mean() + 0.1


def test_pgd_is_at_least_as_strong_as_fgsm_and_restarts_do_not_hurt(model_and_batch):
    model, x, y = model_and_batch
    torch.manual_seed(0)
    wrong_fgsm = (model(fgsm(model, x, y, eps=0.1)).argmax(1) != y).sum()
    wrong_pgd = (model(pgd(model, x, y, eps=0.1, steps=10)).argmax(1) != y).sum()
    torch.manual_seed(0)
    wrong_pgd_r3 = (model(pgd(model, x, y, eps=0.1, steps=10, restarts=3)).argmax(1) != y).sum()
    assert wrong_pgd >= wrong_fgsm
    assert wrong_pgd_r3 >= wrong_pgd  # same first restart, best-of-3 per sample


def test_pgd_restarts_report_what_they_fooled_and_only_add_to_it(model_and_batch):
    """`fooled` (what training.pgd_accuracy counts as not robust) is what the returned x* does to the model, and a
    restart only adds to it: the first restart draws the same start under the same seed."""
    model, x, y = model_and_batch
    fooled = {}
    for restarts in (1, 4):
        torch.manual_seed(1)
        result = pgd_with_start(model, x, y, eps=0.05, steps=3, restarts=restarts)
        with torch.no_grad():
            assert torch.equal(result.fooled, model(result.x_adv).argmax(1) != y)
        assert (perturbation_norm(result.x_adv, x, norm="Linf") <= 0.05 + 1e-6).all()
        fooled[restarts] = result.fooled
    assert (fooled[4] | ~fooled[1]).all()  # every image restart 1 fooled stays fooled


def test_nfgsm_leaves_the_eps_ball_but_not_the_image_box(model_and_batch):
    """N-FGSM's documented exception: noise 2 eps + step eps, no projection (up to 3 eps in Linf)."""
    model, x, y = model_and_batch
    torch.manual_seed(0)
    eps = 0.05
    x_adv = n_fgsm(model, x, y, eps=eps, norm="Linf")
    size = perturbation_norm(x_adv, x, norm="Linf")
    assert (size > eps + 1e-4).any()
    assert (size <= 3 * eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_start_loss_is_the_loss_at_the_attack_start(model_and_batch):
    model, x, y = model_and_batch
    result = fgsm_with_start(model, x, y, eps=0.1)
    assert torch.allclose(result.loss_start, _ce(model, x, y), atol=1e-5)  # zero init: the start is x itself
    torch.manual_seed(0)
    rs = fgsm_rs_with_start(model, x, y, eps=0.1)
    assert rs.loss_start.shape == (len(y),) and not torch.allclose(rs.loss_start, _ce(model, x, y))
