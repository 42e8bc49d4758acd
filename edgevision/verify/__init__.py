"""Parity of every variant against the PyTorch reference, on the same pre-processed inputs."""

from edgevision.verify.parity import compare, judge

__all__ = ["compare", "judge"]
