"""Shared pieces of the families trained with PyTorch (imported lazily: the core runs without torch).

Replicate chains of a small network train as one network whose weights carry a leading replicate axis:
``(R, B, in) @ (R, in, out)`` with ``torch.bmm``. Replicates never share a parameter, so the summed loss has
independent gradients per replicate and Adam (elementwise) updates each replicate exactly as if it trained
alone, in one set of kernels instead of a Python loop over chains.
"""

from __future__ import annotations

import numpy as np

from ..errors import CollapselabError


def torch():
    try:
        import torch as _torch
    except ImportError:
        raise CollapselabError(
            "this family needs PyTorch: pip install -e '.[neural]' (or `make`), which pins the CPU build"
        ) from None
    return _torch


def seed_of(rng: np.random.Generator) -> int:
    """A torch seed drawn from the cell's generator: torch's draws stay addressed by (seed, cell, stream, g)."""
    return int(rng.integers(0, 2**63 - 1))


def batched_linear(R: int, fan_in: int, fan_out: int, gen) -> tuple:
    """Weights (R, in, out) and biases (R, 1, out), initialised as torch.nn.Linear does (Kaiming uniform)."""
    t = torch()
    bound = 1.0 / np.sqrt(fan_in)
    w = (t.rand(R, fan_in, fan_out, generator=gen) * 2 - 1) * bound
    b = (t.rand(R, 1, fan_out, generator=gen) * 2 - 1) * bound
    return w.requires_grad_(), b.requires_grad_()


class BatchedMLP:
    """R independent MLPs with the same shape, evaluated together."""

    def __init__(self, R: int, sizes: list[int], gen):
        self.layers = [batched_linear(R, a, b, gen) for a, b in zip(sizes[:-1], sizes[1:])]

    def parameters(self) -> list:
        return [p for layer in self.layers for p in layer]

    def hidden(self, x):
        """The activations that feed the last layer (features)."""
        t = torch()
        for w, b in self.layers[:-1]:
            x = t.relu(t.baddbmm(b, x, w))
        return x

    def output(self, h):
        w, b = self.layers[-1]
        return torch().baddbmm(b, h, w)

    def __call__(self, x, final=None):
        x = self.output(self.hidden(x))
        return final(x) if final is not None else x
