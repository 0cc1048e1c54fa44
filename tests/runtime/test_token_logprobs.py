"""`TokenLogprobs` (the runtime's per-token log-prob extraction) against a full log-softmax.

The log-probs and the gradients w.r.t. hidden states, LM head and bias equal the naive
path's within float32 rounding at ragged shapes, vocabularies that are no multiple of the
tile, several row blocks, temperatures, `W.grad` None or already holding a gradient, a
tied embedding / LM head and bf16. The LM head's gradient goes into `W.grad` tile by tile:
no [vocab × hidden] temporary is allocated beyond `W.grad` itself, also when several sets
share the head in one backward (the memory test fails where backward returns the gradient)."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ptdsl.runtime import queries
from ptdsl.runtime.queries import TokenLogprobs


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 64 × 128 and blocks of 64 rows, so small tensors cross many tiles and blocks."""
    monkeypatch.setattr(queries, "TILE_ELEMENTS", 64 * 128)
    monkeypatch.setattr(queries, "ROW_BLOCK", 64)


def naive(h, w, b, targets, temperature):
    z = h @ w.T if b is None else h @ w.T + b
    return torch.log_softmax(z.float() / temperature, -1).gather(-1, targets[:, None])[:, 0]


def _inputs(rows, vocab, hidden, bias, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, hidden, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g) * 0.5).to(dtype).requires_grad_()
    b = (torch.randn(vocab, generator=g) * 0.1).to(dtype).requires_grad_() if bias else None
    targets = torch.randint(0, vocab, (rows,), generator=g)
    weights = torch.randn(rows, generator=g)  # a per-row upstream gradient, as a loss gives
    return h, w, b, targets, weights


def _run(fn, h, w, b, targets, weights, temperature, preset):
    """(log-probs, ∂h, ∂W, ∂b) of Σ weights·lp; `preset` gradients start at a known value."""
    params = [x for x in (h, w, b) if x is not None]
    for x in params:
        x.grad = torch.full_like(x, 0.25) if preset else None
    lp = fn(h, w, b, targets, temperature)
    (lp * weights).sum().backward()
    return [lp.detach()] + [x.grad.clone() for x in params]


@pytest.mark.parametrize("rows,vocab,hidden", [(1, 130, 8), (37, 1000, 16), (200, 1031, 12)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("preset", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_equals_full_log_softmax(small_tiles, rows, vocab, hidden, bias, preset, temperature):
    args = _inputs(rows, vocab, hidden, bias)
    ours = _run(TokenLogprobs.apply, *args, temperature, preset)
    ref = _run(naive, *args, temperature, preset)
    for name, a, r in zip(["log-probs", "dh", "dW", "db"], ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5, msg=name)


def test_default_tiles_at_a_real_shape():
    """The shipped tile sizes (no monkeypatch): 300 rows × a 50,000 vocabulary, hidden 64.
    Logits reach ±30 here and sums run over 50,000 terms, so float32 rounding is relative
    to the largest value (both paths are ~1e-6 of it from a float64 reference)."""
    args = _inputs(300, 50_000, 64, False)
    for preset in (False, True):
        ours = _run(TokenLogprobs.apply, *args, 1.0, preset)
        ref = _run(naive, *args, 1.0, preset)
        for a, r in zip(ours, ref):
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5 * r.abs().max().item())


def test_tied_embedding_and_head(small_tiles):
    """The head's weight is also the input embedding: both gradients land in one `W.grad`."""
    h0, w, _, targets, weights = _inputs(90, 300, 16, False)
    ids = targets.roll(1)

    def tied(fn):
        w.grad = None
        hidden = torch.tanh(torch.nn.functional.embedding(ids, w) * 3)
        (fn(hidden, w, None, targets, 1.0) * weights).sum().backward()
        return w.grad.clone()
    torch.testing.assert_close(tied(TokenLogprobs.apply), tied(naive), rtol=1e-5, atol=1e-5)


def test_sets_sharing_the_head(small_tiles):
    """Two sets through one head in one backward (chosen and rejected) add up in `W.grad`."""
    h, w, _, targets, weights = _inputs(120, 700, 16, False)

    def two_sets(fn):
        w.grad, h.grad = None, None
        loss = (fn(h[:50], w, None, targets[:50], 1.0) * weights[:50]).sum() \
            - (fn(h[50:], w, None, targets[50:], 1.0) * weights[50:]).sum()
        loss.backward()
        return w.grad.clone(), h.grad.clone()
    for a, r in zip(two_sets(TokenLogprobs.apply), two_sets(naive)):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


class _NewStorages(TorchDispatchMode):
    """Bytes of each storage an op creates (outputs whose storage existed before are skipped)."""

    def __init__(self, known):
        super().__init__()
        self.known, self.sizes = {t.untyped_storage().data_ptr() for t in known}, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.known:
                self.known.add(t.untyped_storage().data_ptr())
                self.sizes.append(t.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("preset", [False, True])
def test_no_head_sized_temporary(small_tiles, preset):
    """Backward of two sets through one head allocates nothing head-sized but `W.grad` itself
    (when it was None): no gradient returned to autograd to be added into `W.grad`."""
    h, w, _, targets, weights = _inputs(128, 4096, 32, False)
    w.grad = torch.zeros_like(w) if preset else None
    loss = (TokenLogprobs.apply(h[:64], w, None, targets[:64], 1.0) * weights[:64]).sum() \
        + (TokenLogprobs.apply(h[64:], w, None, targets[64:], 1.0) * weights[64:]).sum()
    with _NewStorages([h, w] + ([w.grad] if preset else [])) as seen:
        loss.backward()
    head = w.numel() * w.element_size()
    assert sum(size >= head for size in seen.sizes) == (0 if preset else 1)
    assert max(size for size in seen.sizes if size < head) <= 64 * 128 * 4


@pytest.mark.filterwarnings("ignore:Using backward\(\) with create_graph")
def test_hooks_and_create_graph_get_the_gradient():
    """Where autograd must see the head's gradient (a hook on W, create_graph), backward
    returns it: the hook receives the full gradient and `W.grad` is the same."""
    h, w, _, targets, weights = _inputs(40, 500, 8, False)
    ref = _run(naive, h, w, None, targets, weights, 1.0, False)[2]
    seen = []
    handle = w.register_hook(lambda g: seen.append(g.clone()))
    got = _run(TokenLogprobs.apply, h, w, None, targets, weights, 1.0, False)[2]
    handle.remove()
    torch.testing.assert_close(seen[0], ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    w.grad = None
    (TokenLogprobs.apply(h, w, None, targets, 1.0) * weights).sum().backward(create_graph=True)
    torch.testing.assert_close(w.grad.detach(), ref, rtol=1e-5, atol=1e-5)


def _via_autograd(w):
    """A no-op hook: backward then returns the head's gradient to autograd (the reference path)."""
    return w.register_hook(lambda g: None)


@pytest.mark.parametrize("autocast,dtype", [(True, torch.float32), (False, torch.bfloat16)])
@pytest.mark.parametrize("preset", [False, True])
def test_low_precision_same_as_returned_gradient(autocast, dtype, preset):
    """bf16 autocast over fp32 weights, and bf16 weights: adding tiles into `W.grad` gives
    bit for bit what autograd's own `W.grad += returned gradient` gives, and both stay
    within bf16 rounding of the naive path."""
    h, w, _, targets, weights = _inputs(48, 600, 16, False, dtype=dtype)

    def grads(fn, hooked=False):
        handle = _via_autograd(w) if hooked else None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = _run(fn, h, w, None, targets, weights, 1.0, preset)
        if handle:
            handle.remove()
        return out
    ours, returned, ref = grads(TokenLogprobs.apply), grads(TokenLogprobs.apply, True), grads(naive)
    for a, r in zip(ours, returned):
        assert torch.equal(a, r)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a.float(), r.float(), rtol=0.05, atol=0.05)


def test_accumulator_hooks_see_the_whole_gradient(small_tiles):
    """W's post-accumulate hook (what DDP's gradient sync and optimizers-in-backward use) runs
    once per backward, after `W.grad` holds every set's gradient."""
    h, w, _, targets, weights = _inputs(100, 900, 16, False)
    ref = _run(naive, h, w, None, targets, weights, 1.0, True)[2]
    w.grad, seen = torch.full_like(w, 0.25), []
    handle = w.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.clone()))
    loss = (TokenLogprobs.apply(h[:30], w, None, targets[:30], 1.0) * weights[:30]).sum() \
        + (TokenLogprobs.apply(h[30:], w, None, targets[30:], 1.0) * weights[30:]).sum()
    loss.backward()
    handle.remove()
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], ref, rtol=1e-5, atol=1e-5)
