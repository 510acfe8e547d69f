"""Learners: what trains the policy. Imagination (Dreamer's actor-critic) and off-policy SAC."""
