"""Shared test helpers: run a compiled loss with gradients w.r.t. its trainable inputs, and
compare two such results; compile a method once per test process."""
from __future__ import annotations

import functools

import torch

import ptdsl


def compiled(name: str, **params):
    """`ptdsl.compile(name, **params)`, compiled once per process and shared: for the bodies of
    hypothesis tests, which run once per example (a compile is 30-130 ms; a method × 40 examples
    spent seconds compiling the same spec again). Sharing is safe: a CompiledMethod holds no
    state between `loss`/`interpret` calls (running statistics live in the caller's `state`)."""
    return _compiled(name, tuple(sorted(params.items())))


@functools.lru_cache(maxsize=None)
def _compiled(name: str, params: tuple):
    return ptdsl.compile(name, **dict(params))


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


def trainable(c) -> list[str]:
    """The names of a compiled method's trainable inputs (the leaves gradients are taken for)."""
    return [i.name for i in c.inputs if i.trainable]


def assert_close(a, b, rtol=1e-6, atol=1e-9, what="", nonfinite_agree=False):
    """`a` and `b` agree within tolerance, and both are finite everywhere.

    Two losses that are both NaN are two broken losses, not an agreement, so a non-finite value
    fails unless the test passes ``nonfinite_agree=True``: then NaN must meet NaN and ±inf the
    same ±inf, position by position (for tests of what a loss does on purpose at inf or NaN).
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if not nonfinite_agree:
        for name, t in (("first", a), ("second", b)):
            assert torch.isfinite(t).all(), f"{what}: the {name} value is not finite: {t}"
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=nonfinite_agree,
                               msg=lambda m: f"{what}: {m}")


def assert_same(a, b, names, rtol=1e-6, atol=1e-9, what=""):
    """Two `loss_and_grads` results agree: the loss, and the gradient of each of `names`."""
    (va, ga), (vb, gb) = a, b
    assert_close(va, vb, rtol=rtol, atol=atol, what=f"{what} loss")
    for n in names:
        assert_close(ga[n], gb[n], rtol=rtol, atol=atol, what=f"{what} grad {n}")
