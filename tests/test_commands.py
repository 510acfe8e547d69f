"""commands.py: loading a run sets torch's threads; the progress display's texts."""

import pytest
import torch

from dreamercli import runs
from dreamercli.commands import build_config, clock, load_agent, phase_text
from dreamercli.config import ConfigError
from dreamercli.progress import Progress


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


def test_display_texts():
    assert clock(None) == "-"
    assert clock(0.4) == "0:00:00" and clock(59.6) == "0:01:00" and clock(3 * 3600 + 62) == "3:01:02"
    p = Progress(500, 10_000, 7, None, {}, 0.0, "pretrain", 37, 200)
    assert phase_text(p) == "pretrain 37/200"
    assert phase_text(Progress(600, 10_000, 8, None, {}, 30.0)) == "train"


def test_build_config_refuses_a_config_that_is_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a JSON file"):
        build_config({}, config_file=tmp_path)
    (tmp_path / "c.json").write_text('{"steps": true}')
    with pytest.raises(ConfigError, match=r"^steps must be an integer, got true$"):
        build_config({}, config_file=tmp_path / "c.json")
