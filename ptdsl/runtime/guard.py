"""Finiteness around each optimizer step: no non-finite number reaches the weights
or a checkpoint unannounced.

Before every optimizer step the guard looks at each micro-batch's loss and at the
gradient norm after accumulation (DDP has averaged the gradients, so the norm is the
same on every process; the verdict is still summed over processes, so no process
ever steps alone). A bad step stops the run (`nonfinite_grads = "stop"`, the
default) naming the first IR node whose value or gradient is non-finite, or is
skipped — the update dropped, the step counted — up to `max_skipped_steps`. After
the update the weights are checked too: a finite gradient can still overflow them.
The advice to lower the learning rate is given only when the record says so: the
problem appeared after updates that made the weights grow, not at the run's first
step. Under fp16 the gradient scaler owns non-finite gradients (it skips the step
and lowers its scale, as in accelerate), so only the loss and the weights are
checked there. A metric that turns non-finite while the loss stays finite is
reported once, with its spec line."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ptdsl.runtime import diagnose
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.sharding import full

MODES = ("stop", "skip")
GROWTH = 10.0  # a weight norm this many times the starting one: the updates are diverging


def check_options(mode: str, max_skipped: int) -> None:
    if mode not in MODES:
        raise RuntimeSetupError(f"--nonfinite-grads takes {' or '.join(MODES)}, got `{mode}`")
    if max_skipped < 0:
        raise RuntimeSetupError(f"--max-skipped-steps must be 0 or more, got {max_skipped}")


@dataclass
class Guard:
    compiled: object
    acc: object
    params: list
    mode: str = "stop"
    max_skipped: int = 10
    lr: float = 0.0
    skipped: int = 0          # steps skipped so far, carried in checkpoints
    log: object = print
    w0: float = 0.0           # the weights' norm when the run started
    updates: int = 0          # updates applied by this run
    norms: list = field(default_factory=list)   # finite gradient norms so far
    _bad_loss: tuple | None = None               # (micro-batch, its detached inputs)
    _warned: set = field(default_factory=set)
    clip_groups: tuple = ()   # (name, params) clipped each on its own (a separate critic); () = one group
    group_norms: dict = field(default_factory=dict)  # each group's gradient norm at the last step

    def __post_init__(self):
        self.w0 = self._weight_norm()

    def watch_loss(self, loss, inputs: dict, micro: int) -> None:
        """Remember the first micro-batch whose loss is not finite; the backward still runs,
        so every process reaches the same collective calls before the verdict."""
        if self._bad_loss is None and not torch.isfinite(loss.detach()).all():
            self._bad_loss = (micro, {k: v.detach() for k, v in inputs.items()})

    def step_ok(self, step: int, max_norm: float, rerun) -> tuple[float, bool]:
        """The gradient norm (clipped to `max_norm` when > 0) and whether to apply the update.
        `rerun()` gives this process's micro-batch inputs again, for the diagnosis."""
        norm = self._clip(max_norm or math.inf)
        scaled = self.acc.scaler is not None  # fp16: the scaler skips overflowing steps itself
        finite = all(math.isfinite(n) for n in self.group_norms.values()) and math.isfinite(norm)
        local = torch.tensor([float(self._bad_loss is not None), float(not scaled and not finite)],
                             device=self.acc.device)
        bad_loss, bad_grad = (self.acc.reduce(local, "sum") > 0).tolist()
        if not (bad_loss or bad_grad):
            self.norms.append(norm)
            return norm, True
        # the norm that is not finite: the policy's, or a separate critic's (clip_groups)
        bad_norm = next((n for n in self.group_norms.values() if not math.isfinite(n)), norm)
        what = self._loss_text(step) if bad_loss else self._grad_text(step, bad_norm, rerun())
        self._bad_loss = None
        if self.mode == "skip" and self.skipped < self.max_skipped:
            self.skipped += 1
            self.log(f"warning: skipped step {step + 1} ({self.skipped} of at most {self.max_skipped}): {what}")
            return norm, False
        cap = f" ({self.skipped} steps skipped already, the most --max-skipped-steps allows)" \
            if self.mode == "skip" else ""
        raise RuntimeSetupError(what + cap, help=self._advice())

    def _clip(self, max_norm: float) -> float:
        """Clip the gradient norm and return the first group's (the policy's). With separate
        critics each group is clipped on its own, as verl and OpenRLHF clip actor and critic, so a
        critic's large value-loss gradient never shrinks the policy's step (TRL's PPOTrainer
        wrapped both in one module and clipped them together)."""
        if not self.clip_groups:
            return float(full(self.acc.clip_grad_norm_(self.params, max_norm)))
        self.acc.unscale_gradients()  # once for all groups (fp16); what accelerate's clip does first
        self.group_norms = {name: float(full(torch.nn.utils.clip_grad_norm_(params, max_norm)))
                            for name, params in self.clip_groups}
        return next(iter(self.group_norms.values()))

    def after_update(self, step: int) -> None:
        """Weights overflowed by an update with a finite gradient are an error too."""
        self.updates += 1
        if math.isfinite(self._weight_norm()):
            return
        bad = sum(int(full((~torch.isfinite(p.detach())).sum())) for p in self.params)
        if not bad:  # finite weights whose squares overflow the norm: huge, not (yet) broken
            return
        total = sum(p.numel() for p in self.params)
        raise RuntimeSetupError(
            f"{bad:,} of {total:,} weights are not finite after the update of step {step + 1}, although its "
            f"gradient was finite (norm {self.norms[-1] if self.norms else float('nan'):.3g})",
            help=f"the update overflowed: lower the learning rate (--lr, now {self.lr:g}); nothing was saved")

    def check_metrics(self, row: dict, step: int) -> None:
        if not math.isfinite(row.get("loss", 0.0)):
            return
        decls = self.compiled.method.definition.metrics
        for name, value in row.items():
            if name in decls and name not in self._warned and not math.isfinite(value):
                self._warned.add(name)
                self.log(f"warning: metric `{name}` is {value} at step {step + 1} while the loss is finite; "
                         f"it is defined at {decls[name].span} (later non-finite values are not reported)")

    # ---- messages -------------------------------------------------------------------

    def _loss_text(self, step: int) -> str:
        if self._bad_loss is None:
            return f"the loss is not finite at step {step + 1} on another process"
        micro, inputs = self._bad_loss
        where = f" (micro-batch {micro + 1})" if micro else ""
        return f"the loss is not finite at step {step + 1}{where}: {diagnose.first_nonfinite(self.compiled, inputs)}"

    def _grad_text(self, step: int, norm: float, micro_inputs: list) -> str:
        head = f"the gradient is not finite at step {step + 1} (norm {norm}), although the loss is finite"
        reports = [diagnose.gradient_report(self.compiled, inputs, norm_, state) for inputs, norm_, state in micro_inputs]
        found = [text for bad, text in reports if bad]
        if found:
            return f"{head}: {found[0]}"
        largest = reports[0][1] if reports else "no micro-batch on this process"
        return (f"{head}: {largest}; the model's backward makes it non-finite "
                f"(the weights' norm is {self._weight_norm():.3g})")

    def _advice(self) -> str:
        w = self._weight_norm()
        n = f"{self.updates} update{'s' if self.updates != 1 else ''}"
        if self.updates == 0:
            return ("this happened before any update of this run, so the learning rate is not the cause: "
                    "guard the expression named above, or check the method's parameters (--set) and the data")
        if math.isfinite(w) and w <= GROWTH * self.w0:
            return (f"the weights have not grown (norm {self.w0:.3g} → {w:.3g} in {n}), so a lower learning "
                    f"rate is unlikely to help: guard the expression named above, or check this batch's data")
        return (f"the weights' norm grew from {self.w0:.3g} to {w:.3g} in {n}: the training diverges; "
                f"lower the learning rate (--lr, now {self.lr:g}) or raise --warmup-ratio")

    def _weight_norm(self) -> float:
        """The L2 norm of all weights: one fused pass (the norm clipping computes for gradients;
        a max-abs pass costs several times more on a CPU); non-finite iff a weight is, or huge."""
        if not self.params:
            return 0.0
        with torch.no_grad():
            per = torch._foreach_norm([p.detach() for p in self.params], 2)
            return float(torch.stack([full(x).double() for x in per]).norm())
