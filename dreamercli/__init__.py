"""dreamer: a small world-model RL agent (Dreamer-lite) for Gymnasium tasks."""

from __future__ import annotations

from .config import VERSION as __version__

__all__ = ["DreamerLite", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import dreamercli` (and `dreamer --help`) does not load torch.
    if name == "DreamerLite":
        from .api import DreamerLite

        return DreamerLite
    raise AttributeError(f"module 'dreamercli' has no attribute {name!r}")
