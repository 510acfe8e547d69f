"""dreamer: a small world-model RL agent (Dreamer-lite) for Gymnasium tasks."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["DreamerLite", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import dreamercli` (and `dreamer --help`) does not load torch.
    if name == "DreamerLite":
        from .api import DreamerLite

        return DreamerLite
    raise AttributeError(f"module 'dreamercli' has no attribute {name!r}")
