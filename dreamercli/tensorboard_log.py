"""TensorBoard event files beside metrics.jsonl (`--tensorboard`): the same rows as scalars, the config as text.

metrics.jsonl stays the record: on resume the event files are rebuilt from it (already cut back to
the checkpoint), so a resumed run's stream holds each step once, then grows as the run goes on.
Named tensorboard_log so that it never shadows the tensorboard package.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import runs
from .config import TENSORBOARD_INSTALL, Config, ConfigError, to_dict

FOLDER = "tensorboard"  # RUN/tensorboard/


class TensorBoardLog:
    """An event file in RUN/tensorboard/: metrics rows as scalars named as in metrics.jsonl."""

    def __init__(self, run_dir: Path, config: Config, elapsed: float):
        """A fresh event file holding the config as text; elapsed: the run's training seconds so far, which
        sets the wall time of rows by their 'time' (TensorBoard's relative axis is then training seconds)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # absent, or an install that does not import
            raise ConfigError(f"tensorboard is on, but it cannot be imported ({err}): {TENSORBOARD_INSTALL}") from None
        self.folder = Path(run_dir) / FOLDER
        self.began = time.time() - elapsed
        try:
            self.writer = SummaryWriter(log_dir=str(self.folder), flush_secs=10)
        except OSError as err:
            raise runs.RunError(f"cannot write {self.folder}: {err.strerror or err}") from None
        # Four spaces: TensorBoard renders text as markdown, and this keeps the JSON as it is.
        text = "\n".join("    " + line for line in json.dumps(to_dict(config), indent=2).splitlines())
        self.writer.add_text("config", text, 0, walltime=self.began)

    @classmethod
    def rebuilt(cls, run_dir: Path, config: Config, elapsed: float) -> TensorBoardLog:
        """The event files of a resumed run: the old ones removed, every row of metrics.jsonl written again."""
        folder = Path(run_dir) / FOLDER
        if folder.is_dir():
            for old in folder.iterdir():
                if old.is_file() and ".tfevents." in old.name:
                    old.unlink()
        log = cls(run_dir, config, elapsed)
        log.write(runs.read_metrics(run_dir))
        return log

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """Each row's numbers as scalars at its step; its 'time' (which a log row and an evaluation row at one
        step both have) as their wall time. NaN is left out, as metrics.jsonl writes it as null."""
        for row in rows:
            wall = self.began + row.get("time", time.time() - self.began)
            for key, value in row.items():
                if key not in ("step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool) \
                        and math.isfinite(value):
                    self.writer.add_scalar(key, value, row["step"], walltime=wall)
        self.writer.flush()  # rows come every log_every steps: TensorBoard shows them as they are made

    def close(self) -> None:
        self.writer.close()
