"""The world model's own random stream, so that model work never moves the learner's draws.

mbpo and hybrid do two kinds of work on one seed: the off-policy learner's (its initial
weights, SAC's dropout masks and action noise, replayed transitions, the episodes' noise
seeds) and the world model's (its initial weights and the imagination critic's, replayed
sequences, latent samples, imagined and branched rollouts). Drawn from one stream, every
world-model update would shift every later learner draw: hybrid and mbpo would follow
another trajectory than model-free even where the model-trust guard lets the model change
nothing, and a comparison of the algos on the same seed would measure that shift as much
as the model. With a stream of its own, the model reaches the learner only through what the
guard allows: a model it never trusts leaves the learner exactly model-free's, step for step
(tests/test_streams.py). dreamer has no second learner and keeps the one stream.

The stream is a torch generator state and a numpy Generator, swapped in around model work
(`active`): torch's global generator is what every torch op without an explicit generator
reads, and swapping its state (about 5 KB) costs microseconds, against passing a generator
into every sampling call of the model's code.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import numpy as np
import torch

MODEL_STREAM = 1  # the world model's spawn key beside the seed; 0 would be the learner's own


class ModelStream:
    """torch and numpy generator states of the world model's work, active only inside `active()`."""

    def __init__(self, seed: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        sequence = np.random.SeedSequence([seed, MODEL_STREAM])
        self.rng = np.random.default_rng(sequence)
        torch_seed = int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))  # torch takes < 2^63
        self.torch_state = torch.Generator().manual_seed(torch_seed).get_state()
        self.cuda_state = None
        if self.device.type == "cuda":
            outer = torch.cuda.get_rng_state(self.device)
            with torch.cuda.device(self.device):
                torch.cuda.manual_seed(torch_seed)
            self.cuda_state = torch.cuda.get_rng_state(self.device)
            torch.cuda.set_rng_state(outer, self.device)

    @contextlib.contextmanager
    def active(self) -> Iterator[np.random.Generator]:
        """Run a block on the model's stream: torch's global generator holds its state meanwhile, and
        the block samples replay with the numpy Generator it is given; the learner's state comes back after."""
        outer = torch.get_rng_state()
        torch.set_rng_state(self.torch_state)
        outer_cuda = None
        if self.cuda_state is not None:
            outer_cuda = torch.cuda.get_rng_state(self.device)
            torch.cuda.set_rng_state(self.cuda_state, self.device)
        try:
            yield self.rng
        finally:
            self.torch_state = torch.get_rng_state()
            torch.set_rng_state(outer)
            if outer_cuda is not None:
                self.cuda_state = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(outer_cuda, self.device)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The stream's position, for checkpoints (numpy's state as JSON bytes)."""
        state = {"torch": self.torch_state.clone(),
                 "numpy": torch.frombuffer(bytearray(json.dumps(self.rng.bit_generator.state).encode()),
                                           dtype=torch.uint8)}
        if self.cuda_state is not None:
            state["cuda"] = self.cuda_state.clone()
        return state

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what state_tensors() returned; a checkpoint from before the stream existed keeps the
        fresh stream (its run drew model and learner from one stream, which no state can split)."""
        if "torch" not in state:
            return
        self.torch_state = state["torch"].clone()
        self.rng.bit_generator.state = json.loads(bytes(state["numpy"].tolist()).decode())
        if self.cuda_state is not None and "cuda" in state:
            self.cuda_state = state["cuda"].clone()
