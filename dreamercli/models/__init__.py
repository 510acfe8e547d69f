"""World models: what the agent learns of the environment. Today one, the latent model."""

from .latent import Imagined, WorldModel

__all__ = ["Imagined", "WorldModel"]
