"""Gradient combiners (unlearning/combine.py) on hand-built gradients: linear losses <a, p> and <b, p>
have gradients exactly a and b, so every combiner's output can be checked against its formula."""
import pytest
import torch

from unlearning import combine


def pair(seed, conflict=True, d=50):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(d, generator=g), torch.randn(d, generator=g)
    if conflict and a @ b >= 0:
        b = -b
    if not conflict and a @ b < 0:
        b = -b
    return a, b


def run(comb, a, b, split=(20, 30)):
    """Two parameters of different shapes; l_u = <a, p>, l_r = <b, p>. Returns (flat grad, logs)."""
    ps = [torch.zeros(split[0], requires_grad=True), torch.zeros(2, split[1] // 2, requires_grad=True)]
    flat = lambda v: (v[:split[0]], v[split[0]:].view(2, -1))  # noqa: E731
    l_u = sum((x * p).sum() for x, p in zip(flat(a), ps))
    l_r = sum((x * p).sum() for x, p in zip(flat(b), ps))
    logs = comb.backward(ps, l_u, l_r)
    return torch.cat([p.grad.reshape(-1) for p in ps]), logs


def cos(x, y):
    return float(x @ y / (x.norm() * y.norm()))


def test_linear_is_the_weighted_sum():
    a, b = pair(0)
    g, _ = run(combine.Linear(0.3, 2.0), a, b)
    torch.testing.assert_close(g, 0.3 * a + 2.0 * b)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("mode", ["none", "one_sided", "symmetric"])
def test_pcgrad_removes_the_conflict_its_mode_promises(mode, seed):
    a, b = pair(seed, conflict=True)
    h_u, h_r = combine.project_conflict(a, b, mode)
    g, logs = run(combine.PCGrad(mode), a, b)
    torch.testing.assert_close(g, h_u + h_r)
    assert float(logs["cos_before"]) == pytest.approx(cos(a, b), abs=1e-5) and cos(a, b) < 0
    if mode == "none":
        torch.testing.assert_close(h_u, a)
        torch.testing.assert_close(h_r, b)
        return
    assert float(h_u @ b) >= -1e-4  # the projected forget gradient no longer opposes g_r
    assert float(logs["cos_after"]) >= -1e-5
    if mode == "symmetric":
        assert float(h_r @ a) >= -1e-4  # and the projected retain gradient no longer opposes g_u
        assert float(h_u @ h_r) >= -1e-4
    else:
        torch.testing.assert_close(h_r, b)


@pytest.mark.parametrize("mode", ["one_sided", "symmetric"])
def test_pcgrad_leaves_agreeing_gradients_alone(mode):
    a, b = pair(1, conflict=False)
    g, logs = run(combine.PCGrad(mode), a, b)
    torch.testing.assert_close(g, a + b)
    assert float(logs["cos_after"]) == pytest.approx(float(logs["cos_before"]), abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("eps", [0.0, 0.5, 3.0, -0.5])
def test_ungrad_satisfies_the_bound(seed, eps):
    a, b = pair(seed, conflict=True)
    g, logs = run(combine.UNGrad(eps), a, b)
    d, lam = combine.ungrad_direction(a, b, eps)
    torch.testing.assert_close(g, d)
    assert float(b @ g) >= -eps - 1e-4
    assert float(lam) >= 0 and float(logs["lambda"]) == pytest.approx(float(lam))
    expected = max(0.0, float((-(a @ b) - eps) / (b @ b)))
    assert float(lam) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    if expected > 0:  # active constraint: it holds with equality (closest direction to g_u)
        assert float(b @ g) == pytest.approx(-eps, abs=1e-4)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_ungrad_clipped_to_norm_one_keeps_direction_and_bound(seed, eps):
    """The authors' `igs` clips the combined gradient to norm 1: same direction, norm min(1, |d|),
    and <g_r, c d> >= -eps still holds for eps >= 0 (c <= 1)."""
    a, b = pair(seed, conflict=True)
    a = 5 * a  # |d| > 1: the clip is active
    d, _ = combine.ungrad_direction(a, b, eps)
    g, logs = run(combine.UNGrad(eps, max_norm=1.0), a, b)
    assert float(g.norm()) == pytest.approx(min(1.0, float(d.norm())), rel=1e-5)
    assert cos(g, d) == pytest.approx(1.0, abs=1e-6)
    assert float(b @ g) >= -eps - 1e-5 and float(logs["norm_before_clip"]) == pytest.approx(float(d.norm()))
    small, _ = run(combine.UNGrad(eps, max_norm=1e3), a, b)  # a short direction is left alone
    torch.testing.assert_close(small, d)


def test_ungrad_is_g_u_without_conflict():
    a, b = pair(2, conflict=False)
    g, logs = run(combine.UNGrad(0.0), a, b)
    torch.testing.assert_close(g, a)
    assert float(logs["lambda"]) == 0.0
    g0, _ = run(combine.UNGrad(1.0), a, torch.zeros_like(b))  # no retain gradient: nothing to do
    torch.testing.assert_close(g0, a)


def test_eupmu_gradient_is_the_lagrangian_and_the_dual_step_has_the_paper_sign():
    a, b = pair(3)
    comb = combine.EUPMU(eps=0.1, dual_lr=0.5, lambda_init=2.0, dual_opt="sgd", per_lr=True)
    g, logs = run(comb, a, b)
    torch.testing.assert_close(g, a + 2.0 * b)
    assert comb.passes == 1 and float(logs["lambda"]) == 2.0
    # retain loss ROSE by 0.3 over a step of lr 0.1: delta = -3 + 0.1 -> lambda grows by 0.5 * 2.9
    out = comb.after_step(torch.tensor(1.0), torch.tensor(1.3), lr=0.1)
    assert float(out["delta"]) == pytest.approx(-2.9)
    assert float(comb.lam) == pytest.approx(2.0 + 0.5 * 2.9)
    # a big fall drives it to the projection at 0, never below
    comb.after_step(torch.tensor(2.0), torch.tensor(0.0), lr=0.1)
    assert float(comb.lam) == 0.0
    # a batch without retain samples leaves it alone
    comb.after_step(torch.tensor(1.0), torch.tensor(5.0), lr=0.1, valid=torch.tensor(False))
    assert float(comb.lam) == 0.0


def test_eupmu_normalised_weights_and_adam_dual():
    a, b = pair(4)
    comb = combine.EUPMU(eps=0.0, dual_lr=0.1, lambda_init=3.0, dual_opt="adam", per_lr=False,
                         normalise=True)
    g, _ = run(comb, a, b)
    torch.testing.assert_close(g, a / 4 + 0.75 * b)
    out = comb.after_step(torch.tensor(1.0), torch.tensor(1.5), lr=0.1)  # rose: Adam moves up by ~lr
    assert float(out["delta"]) == pytest.approx(-0.5)
    assert float(comb.lam) == pytest.approx(3.1, abs=1e-3)


def test_eupmu_previous_batch_dual_step_comes_before_the_backward():
    """EUPMU-fast (the authors' EU_fast order): the dual step from the remembered and this step's
    retain loss happens before this step's backward, which already uses the new multiplier."""
    comb = combine.EUPMU(eps=0.0, dual_lr=1.0, lambda_init=1.0, dual_opt="sgd", per_lr=True,
                         estimate="previous_batch")
    first = comb.before_backward(torch.tensor(2.0), lr=0.5)
    assert first == {} and float(comb.lam) == 1.0  # nothing to compare with yet
    assert comb.after_step(torch.tensor(2.0), torch.tensor(9.0), lr=0.5) == {}  # not this estimate's hook
    # rose from 2.0 to 2.5 over a step taken at the REMEMBERED lr 0.5: delta = -1 (not -0.5 / 0.1)
    out = comb.before_backward(torch.tensor(2.5), lr=0.1)
    assert float(out["delta"]) == pytest.approx(-1.0) and float(comb.lam) == pytest.approx(2.0)
    a, b = pair(5)
    g, logs = run(comb, a, b)
    torch.testing.assert_close(g, a + 2.0 * b)  # this step's gradient uses the updated multiplier
    assert float(logs["lambda"]) == 2.0
    # a step without retain rows is skipped, and so is the comparison with it at the next step
    comb.before_backward(torch.tensor(0.0), lr=0.1, valid=torch.tensor(False))
    comb.before_backward(torch.tensor(9.0), lr=0.1)
    assert float(comb.lam) == pytest.approx(2.0)
    # the same-batch combiner ignores the previous-batch hook
    same = combine.EUPMU(eps=0.0, dual_lr=1.0, lambda_init=1.0, dual_opt="sgd", per_lr=False)
    same.before_backward(torch.tensor(2.0), lr=0.1)
    assert same.before_backward(torch.tensor(5.0), lr=0.1) == {} and same.lam is None  # untouched


def test_forward_keeping_stats_leaves_batchnorm_untouched():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 4) * 5 + 2
    out = combine.forward_keeping_stats(model, x)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    torch.testing.assert_close(out, model(x))  # same numbers as a train-mode forward
