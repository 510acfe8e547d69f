import torch
from torch import nn

from dreamercli.nets import mlp
from dreamercli.optim import FlatAdam


def _steps(net: nn.Module, step, zero, x: torch.Tensor) -> None:
    for i in range(4):
        zero()
        (net(x).pow(2).sum() * (1 + 100 * i)).backward()  # the later steps are clipped
        step()


def test_flat_adam_matches_adam_with_clipping():
    torch.manual_seed(0)
    a, x = mlp(3, 8, 2), torch.randn(5, 3)
    b = mlp(3, 8, 2)
    b.load_state_dict(a.state_dict())
    ref = torch.optim.Adam(a.parameters(), lr=1e-2, eps=1e-6)

    def ref_step() -> None:
        nn.utils.clip_grad_norm_(a.parameters(), 1.0)
        ref.step()

    _steps(a, ref_step, ref.zero_grad, x)
    flat = FlatAdam(b, lr=1e-2, clip=1.0)
    _steps(b, flat.step, flat.zero_grad, x)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6), name


def test_parameters_stay_views_of_the_flat_tensor_after_loading():
    torch.manual_seed(0)
    net, other = mlp(3, 8, 2), mlp(3, 8, 2)
    flat = FlatAdam(net, lr=1e-2, clip=1.0)
    net.load_state_dict(other.state_dict())  # loading copies into the views in place
    assert torch.equal(flat.param.data, torch.cat([p.flatten() for p in other.parameters()]))
    flat.zero_grad()
    net(torch.randn(4, 3)).sum().backward()
    assert flat.param.grad.abs().sum() > 0
    flat.step()
    assert torch.equal(flat.param.data, torch.cat([p.detach().flatten() for p in net.parameters()]))
