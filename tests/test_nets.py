import torch

from dreamercli.nets import gaussian, gaussian_kl, gaussian_nll, mlp, symexp, symlog, zero_output


def test_symexp_inverts_symlog():
    x = torch.tensor([-1000.0, -3.0, -0.5, 0.0, 0.2, 7.0, 1e4])
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-5)
    assert symlog(torch.tensor(-3.0)) == -symlog(torch.tensor(3.0))


def test_gaussian_kl_is_zero_for_equal_and_matches_closed_form():
    m, s = torch.zeros(4, 3), torch.ones(4, 3)
    assert torch.allclose(gaussian_kl(m, s, m, s), torch.zeros(4))
    # KL(N(1, 1) || N(0, 2^2)) per dim = log 2 + (1 + 1) / 8 - 1/2
    kl = gaussian_kl(torch.ones(1, 1), torch.ones(1, 1), torch.zeros(1, 1), 2 * torch.ones(1, 1))
    assert torch.allclose(kl, torch.tensor([0.6931472 + 0.25 - 0.5]))


def test_gaussian_std_is_bounded_below():
    _, std = gaussian(torch.full((2, 4), -50.0), min_std=0.1)
    assert torch.all(std >= 0.1)


def test_mlp_shapes_and_zero_output():
    net = zero_output(mlp(5, 16, 3))
    out = net(torch.randn(7, 5))
    assert out.shape == (7, 3) and torch.all(out == 0)


def test_gaussian_nll_matches_torch_normal_up_to_its_constant():
    x, mean, std = torch.randn(6, 3), torch.randn(6, 3), torch.rand(6, 3) + 0.1
    expected = -torch.distributions.Normal(mean, std).log_prob(x) - 0.5 * torch.log(torch.tensor(2 * torch.pi))
    assert torch.allclose(gaussian_nll(x, mean, std), expected, atol=1e-5)
