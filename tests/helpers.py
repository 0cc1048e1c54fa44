"""Shared test helpers: run a compiled loss with gradients w.r.t. its trainable inputs."""
from __future__ import annotations

import torch


def with_grad(inputs: dict, names) -> dict:
    out = dict(inputs)
    for n in names:
        out[n] = inputs[n].detach().clone().requires_grad_(True)
    return out


def loss_and_grads(fn, inputs: dict, names):
    """fn(inputs) -> loss tensor; returns (loss value, {name: grad})."""
    x = with_grad(inputs, names)
    loss = fn(x)
    grads = torch.autograd.grad(loss, [x[n] for n in names], allow_unused=True)
    return loss.detach(), {n: (g if g is not None else torch.zeros_like(x[n])) for n, g in zip(names, grads)}


def assert_close(a, b, rtol=1e-6, atol=1e-9, what=""):
    assert torch.isfinite(a).all() == torch.isfinite(b).all(), f"{what}: finiteness differs: {a} vs {b}"
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{what}: {m}")
