"""Adam over a module's parameters packed into one flat tensor, with gradient clipping."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults


class FlatAdam:
    """Adam with global-norm clipping over one flat copy of a module's parameters.

    A small network has dozens of parameter tensors, and clipping plus an Adam step cost a
    few ops per tensor: over a thousand small ops per update on a CPU, where each op's
    dispatch costs more than its arithmetic. Here every parameter and its gradient are views
    into two flat tensors, so zeroing, clipping and stepping are a handful of ops whatever the
    network's shape. The maths is that of torch.optim.Adam and clip_grad_norm_ over the
    parameter list.
    """

    def __init__(self, module: nn.Module, lr: float, clip: float, eps: float = 1e-6):
        params = [p for p in module.parameters() if p.requires_grad]
        assert params, f"{type(module).__name__} has no trainable parameters"
        device = params[0].device
        total = sum(p.numel() for p in params)
        self.param = nn.Parameter(torch.empty(total, device=device))
        self.param.grad = torch.zeros(total, device=device)
        offset = 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                self.param[offset:offset + n].copy_(p.flatten())
                # The module keeps its parameters; they now live in the flat tensors, so
                # autograd accumulates into the flat gradient and Adam's step reaches them.
                p.data = self.param.data[offset:offset + n].view_as(p)
                p.grad = self.param.grad[offset:offset + n].view_as(p)
                offset += n
        self.clip, self.eps, self.lr = clip, eps, lr
        self.state: dict[str, torch.Tensor] = {}  # Adam's step, exp_avg and exp_avg_sq, as torch.optim.Adam names them

    def twin(self, lr: float) -> FlatAdam:
        """A second optimiser of the same flat parameters, with its own Adam moments and rate.

        For one network trained by two objectives whose gradients differ in scale (hybrid's
        policy: SAC's loss and imagined returns): shared moments would let one objective's
        gradient size set the other's step.
        """
        twin = copy.copy(self)  # the same flat parameters and clip
        twin.lr, twin.state = lr, {}
        return twin

    def zero_grad(self) -> None:
        """Zero every gradient in place (the views must stay, so never set them to None)."""
        self.param.grad.zero_()

    def step(self) -> bool:
        """Clip the gradient's global norm and take one Adam step; False (no step) when the norm is NaN or inf.

        A non-finite gradient would write NaN into the weights and into Adam's moments for
        good, so that step is skipped and the gradient zeroed; the caller counts it.
        """
        grad = self.param.grad
        norm = float(torch.linalg.vector_norm(grad))
        if not math.isfinite(norm):
            grad.zero_()
            return False
        if norm > self.clip:  # clip_grad_norm_'s coefficient, which is 1 (no change) below the clip
            grad.mul_(self.clip / (norm + 1e-6))
        if not self.state:
            self.state = {"step": torch.zeros((), device=grad.device), "exp_avg": torch.zeros_like(grad),
                          "exp_avg_sq": torch.zeros_like(grad)}
        st = self.state
        st["step"].add_(1)  # the kernel reads the count; torch.optim.Adam advances it before the call too
        # The kernel torch.optim.Adam(fused=True) runs, called directly: its Python step() wrapper
        # cost several times the arithmetic at these sizes.
        torch._fused_adam_([self.param.data], [grad], [st["exp_avg"]], [st["exp_avg_sq"]], [], [st["step"]],
                           lr=self.lr, beta1=BETAS[0], beta2=BETAS[1], weight_decay=0.0, eps=self.eps,
                           amsgrad=False, maximize=False)
        return True

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Adam's moments and step count (empty before the first step), for checkpoints."""
        return {k: v.detach().cpu().clone() for k, v in self.state.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what state_tensors() returned."""
        if tensors:
            self.state = {k: v.to(self.param.device, torch.float32) for k, v in tensors.items()}

    def finite(self) -> bool:
        """Whether every parameter is a finite number."""
        return bool(torch.isfinite(self.param).all())
