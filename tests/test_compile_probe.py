"""benchmarks/compile_probe.py times a pure-function copy of the critics-only update: it must be
the same update as SAC's, or its figures say nothing about ours."""

import importlib.util
from pathlib import Path

import pytest
import torch
from test_learners_sac import build, random_batch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compile_probe.py"


def load_probe():
    """Import the script as a module (benchmarks is not a package)."""
    spec = importlib.util.spec_from_file_location("compile_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("discrete", [True, False])
def test_the_probes_update_is_sacs_critics_only_update(discrete):
    torch.manual_seed(3)
    sac, _ = build(discrete, sac_dropout=0.0)  # no draws, so both take the same step
    # Rewards within [-1, 1]: SAC's reward unit is then 1, and the probe's copy (which has none) the same maths.
    batch = random_batch(discrete)._replace(rewards=random_batch(discrete).rewards.clamp(-1.0, 1.0))
    f, f_next = sac.features(batch.obs), sac.features(batch.next_obs)
    policy = sac.next_policy(f_next)
    flat = [p for layer in sac.critics.layers for p in layer]
    before = [p.detach().clone() for p in flat]
    weights = [p.clone() for p in before]
    targets = [p.detach().clone() for layer in sac.target_critics.layers for p in layer]
    if discrete:
        x, x_next, select, (probs, logp) = f, f_next, batch.actions, policy
    else:
        x, x_next = torch.cat([f, batch.actions], -1), torch.cat([f_next, policy[0]], -1)
        select, probs, logp = torch.ones(16, 1), torch.ones(16, 1), policy[1].unsqueeze(-1)
    cfg = sac.cfg
    loss = load_probe().critics_step(
        weights, targets, [torch.zeros_like(w) for w in weights], [torch.zeros_like(w) for w in weights], 1.0,
        x, x_next, select, probs, logp, batch.rewards, cfg.sac_discount * (1 - batch.terminated),
        sac.log_alpha.exp().item(), 0.0, cfg.sac_lr, cfg.sac_tau, 100.0)
    metrics = sac.update(batch, actor=False, next_policy=policy)
    assert loss.item() == pytest.approx(metrics["sac/q_loss"], rel=1e-5)
    after = [p.detach() for p in flat] + [p.detach() for layer in sac.target_critics.layers for p in layer]
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=False))  # a step, not a no-op
    for mine, theirs in zip(weights + targets, after, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6), (mine - theirs).abs().max()
