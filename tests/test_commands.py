"""commands.py: loading a run sets torch's threads."""

import torch

from dreamercli import runs
from dreamercli.commands import load_agent


def test_loading_a_run_uses_its_threads_setting(cartpole_run):
    assert runs.read_json(cartpole_run / "config.json")["train"]["threads"] == 1
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        load_agent(cartpole_run, "cpu")
        assert torch.get_num_threads() == 1
        load_agent(cartpole_run, "cpu", threads=3)  # --threads overrides the run's setting
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)

