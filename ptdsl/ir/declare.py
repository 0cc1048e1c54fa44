"""Declarations: the data kind's sets and fields, model roles, rollouts and
reward sources of a method, checked and registered before any expression is
lowered (ir/lower.py reads them to resolve names)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ptdsl.diagnostics import Sink, Span, did_you_mean, error
from ptdsl.ir import builtins as B
from ptdsl.ir.datakinds import DATA_KINDS, EXAMPLES
from ptdsl.ir.graph import SetInfo
from ptdsl.ir.consteval import MAX_EXACT_INT, ConstError, NotConstant, arith, const_eval
from ptdsl.ir.sources import Source, declare_sources
from ptdsl.syntax import ast
from ptdsl.syntax.resolve import MethodDef


@dataclass(frozen=True)
class Role:
    name: str
    kind: str        # policy | frozen_copy | model | value_head | critic | old | mixture
    trainable: bool
    source: str      # e.g. "frozen(policy)", "model(\"gpt2\")"
    of: str | None = None  # the role a frozen copy / value head / old snapshot is built from
    options: tuple = ()    # frozen copies: (("sync_steps", 512), ("mixup", 0.6)) for a moving reference;
    #                        mixtures: (("coef", 0.5), ("with", "reference"));
    #                        critics: (("lr_scale", 2.0), ("warmup_steps", 50))
    path: str | None = None  # `model("…")`, `critic("…")`: what it is loaded from


@dataclass(frozen=True)
class RewardTerm:
    weight: float
    kind: str        # verifier | reward_model | environment (an episode's get_reward())
    name: str


@dataclass(frozen=True)
class Rollout:
    name: str
    model: str
    options: dict
    kind: str = "sample"        # sample | episode (multi-turn, with an environment's tools)
    env: str | None = None      # episode: the environment's name (bound at train time)


@dataclass(frozen=True)
class Update:
    """How each batch of experience is used: `passes` over it, each pass `minibatches`
    optimizer steps (or `micro_batches` micro-batches, TRL's steps_per_generation, divided
    by --grad-accum at run time; 0 means --grad-accum). `span` is None when the spec has
    no `update` line (one pass, one mini-batch)."""
    passes: int = 1
    minibatches: int | None = 1
    micro_batches: int | None = None
    span: Span | None = None


@dataclass
class Declarations:
    sets: dict[str, SetInfo] = field(default_factory=dict)
    rows: dict[str, int | None] = field(default_factory=lambda: {EXAMPLES: None})
    fields: dict[str, str] = field(default_factory=dict)
    field_rows: dict[str, str] = field(default_factory=dict)  # the row space of each data field
    field_sets: dict[str, str] = field(default_factory=dict)  # per-token fields: the set they align with
    roles: dict[str, Role] = field(default_factory=dict)
    rewards: dict[str, tuple[RewardTerm, ...]] = field(default_factory=dict)
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    update: Update = field(default_factory=Update)
    sources: dict[str, Source] = field(default_factory=dict)  # row space → data source (ir/sources.py)
    taken: set[str] = field(default_factory=set)  # names bound to something other than a role


class _Declarer:
    def __init__(self, m: MethodDef, params: dict, sink: Sink):
        self.m, self.params, self.sink = m, params, sink
        self.d = Declarations()
        self.sets, self.rows, self.fields = self.d.sets, self.d.rows, self.d.fields
        self.field_rows = self.d.field_rows
        self.roles, self.rewards, self.rollouts = self.d.roles, self.d.rewards, self.d.rollouts

    def declare(self) -> None:
        m = self.m
        if m.data is None:
            self.sink.add(error("E0206", f"method `{m.name}` has no `data` line", m.span, "in this method",
                                help=f"add e.g. `data preference`; data kinds: {', '.join(DATA_KINDS)}"))
        declare_sources(m, self.d, self._options, self._param_lookup, self.sink)
        if m.policy is None:
            self.sink.add(error("E0206", f"method `{m.name}` has no `policy` line", m.span, "in this method",
                                help="declare the trainable model with a line `policy`"))
        self.roles["policy"] = Role("policy", "policy", True, "policy")
        for name, decl in m.roles.items():
            self._declare_role(name, decl)
        self.roles["old"] = Role("old", "old", False, "old", "policy")
        # the distribution a rollout's generator drew each token from: `logprobs(sampler, y)`
        self.roles["sampler"] = Role("sampler", "sampler", False, "sampler")
        for name, decl in m.rollouts.items():
            self._declare_rollout(name, decl)
        for name, decl in m.rewards.items():
            self._declare_reward(name, decl)
        if m.update is not None:
            self._declare_update(m.update)
        if m.loss is None:
            self.sink.add(error("E0206", f"method `{m.name}` has no `loss`", m.span, "in this method",
                                help="add a line `loss EXPR`, a scalar expression"))

    def _declare_update(self, decl: ast.UpdateDecl) -> None:
        """`update passes = P, minibatches = M` or `update passes = P, micro_batches = K`."""
        seen: dict[str, ast.KwArg] = {}
        for kw in decl.options:
            if kw.name in seen:
                self.sink.add(error("E0209", f"`update` sets `{kw.name}` twice", kw.name_span, "again here",
                                    help="give each option once"))
            seen[kw.name] = kw
        call = ast.Call("update", decl.span, (), tuple(seen.values()), decl.span)
        options = self._options(call, B.UPDATE_OPTIONS, "update")
        if "minibatches" in seen and "micro_batches" in seen:
            self.sink.add(error("E0209", "`minibatches` and `micro_batches` are two spellings of one count",
                                seen["micro_batches"].name_span, "give one of them",
                                help="`minibatches` counts optimizer steps per pass; `micro_batches` counts "
                                     "micro-batches, as TRL's steps_per_generation does"))
        if "micro_batches" in seen:
            self.d.update = Update(options.get("passes", 1), None, options.get("micro_batches", 0), decl.span)
        else:
            self.d.update = Update(options.get("passes", 1), options.get("minibatches", 1), None, decl.span)

    def _declare_role(self, name: str, decl: ast.RoleDecl) -> None:
        src = decl.source
        if name in ("policy", "old", "sampler"):
            self.sink.add(error("E0202", f"`{name}` is a built-in role and cannot be rebound", decl.span))
            return
        if src.func == "frozen" and len(src.args) == 1 and isinstance(src.args[0], ast.Name) \
                and src.args[0].id == "policy":
            options = self._options(src, B.FROZEN_OPTIONS, "frozen")
            self.roles[name] = Role(name, "frozen_copy", False, "frozen(policy)", "policy", tuple(options.items()))
        elif src.func == "model" and len(src.args) == 1 and isinstance(src.args[0], ast.String) and not src.kwargs:
            self.roles[name] = Role(name, "model", False, f'model("{src.args[0].value}")')
        elif src.func == "value_head" and _single_name(src) == "policy":
            self.roles[name] = Role(name, "value_head", True, "value_head(policy)", "policy")
        elif src.func == "critic" and len(src.args) == 1 and (
                isinstance(src.args[0], ast.String) or _is_name(src.args[0], "policy")):
            self._declare_critic(name, src)
        elif src.func == "geometric_mixture" and len(src.args) == 2:
            self._declare_mixture(name, src)
        else:
            self.sink.add(error("E0212", f"`{name}` is bound to something that is not a model", src.span,
                                "not a role source",
                                help="roles are `frozen(policy)`, `model(\"id or path\")`, `value_head(policy)`, "
                                     "`critic(policy)`, `critic(\"id or path\")` "
                                     "or `geometric_mixture(policy, reference, coef = 0.5)`"))

    def _declare_critic(self, name: str, src: ast.Call) -> None:
        """A separate value model with a scalar head, trained beside the policy: a copy of the
        initial policy's body (`critic(policy)`) or a model loaded from a path (`critic("…")`)."""
        options = {"lr_scale": 1.0, "warmup_steps": 0, **self._options(src, B.CRITIC_OPTIONS, "critic")}
        arg = src.args[0]
        path = arg.value if isinstance(arg, ast.String) else None
        source = f'critic("{path}")' if path is not None else "critic(policy)"
        self.roles[name] = Role(name, "critic", True, source, None if path is not None else "policy",
                                tuple(options.items()), path)

    def _declare_mixture(self, name: str, src: ast.Call) -> None:
        """A sampler, not a model: tokens drawn from softmax((1 − coef)·z_A + coef·z_B), the
        logits of two language-model roles declared before it (Nash-MD's π_mix)."""
        parts = []
        for arg in src.args:
            role = self.roles.get(arg.id) if isinstance(arg, ast.Name) else None
            if role is None or role.kind not in ("policy", "frozen_copy", "model"):
                what = f"`{arg.id}` is not" if isinstance(arg, ast.Name) else "this argument is not"
                self.sink.add(error("E0210", f"`geometric_mixture` mixes two language models, and {what} "
                                             "one declared before it", arg.span,
                                    help=f"declared language models: "
                                         f"{', '.join(r for r, i in self.roles.items() if i.kind in ('policy', 'frozen_copy', 'model'))}"))
                return
            parts.append(arg.id)
        coef = {"coef": 0.5, **self._options(src, B.MIXTURE_OPTIONS, "geometric_mixture")}["coef"]
        self.roles[name] = Role(name, "mixture", False, f"geometric_mixture({parts[0]}, {parts[1]}, coef = {coef!r})",
                                parts[0], (("coef", coef), ("with", parts[1])))

    def _declare_rollout(self, name: str, decl: ast.RolloutDecl) -> None:
        c = decl.call
        env = _environment_arg(c)
        if c.func == "episode" and env is None:
            self.sink.add(error("E0212", f"rollout `{name}` must be `episode(MODEL, environment(\"NAME\"), …)`",
                                c.span, help='e.g. `rollout y = episode(policy, environment("calculator"), n = 8, '
                                             'max_turns = 4)`'))
            return
        if c.func not in ("sample", "episode") or not c.args or not isinstance(c.args[0], ast.Name) \
                or (c.func == "sample" and len(c.args) != 1):
            self.sink.add(error("E0212", f"rollout `{name}` must be `sample(MODEL, n = …)` or "
                                         "`episode(MODEL, environment(\"NAME\"), …)`", c.span,
                                help="e.g. `rollout y = sample(policy, n = 8, temperature = 1.0)`"))
            return
        model = c.args[0].id
        role = self.roles.get(model)
        if role is None or role.kind in ("value_head", "critic", "old", "sampler"):
            lms = [r for r, info in self.roles.items() if info.kind not in ("value_head", "critic", "old", "sampler")]
            help = role_help(model, lms, self.taken()) if role is None else \
                f"sample from a language model: {', '.join(f'`{r}`' for r in lms)}"
            what = "not a model role" if role is None else (
                "a value head" if role.kind == "value_head" else "a critic (a value model)" if role.kind == "critic"
                else "a record of sampling, not a model")
            self.sink.add(error("E0210", f"cannot sample from `{model}`", c.args[0].span, what, help=help))
            return
        table = B.EPISODE_OPTIONS if c.func == "episode" else B.SAMPLE_OPTIONS
        options = {"n": 1, **self._options(c, table, c.func)}
        n = options["n"]
        if n < 1:
            self.sink.add(error("E0403", f"`n` must be a whole number ≥ 1, got {n!r}", decl.span,
                                help="n is the number of samples drawn per prompt"))
            n = 1
        if "on_policy" in options:
            self._check_on_policy(decl, n)
        if options.get("once") and not (role.kind == "model" or (role.kind == "frozen_copy"
                                                                  and not dict(role.options).get("sync_steps"))):
            self.sink.add(error("E0403", f"`once` reuses the samples of `{model}` for the whole run, which is only "
                                         "right for a model that never changes", decl.span,
                                help="sample once from a frozen model: `frozen(policy)` without `sync_steps`, "
                                     "or `model(\"…\")`"))
        self.rollouts[name] = Rollout(name, model, options, c.func, env)
        # one sample per prompt: its rows are the dataset's rows, so per-example values combine
        rows = name if n > 1 else EXAMPLES
        self.sets[name] = SetInfo(name, rows, "rollout")
        if n > 1:
            self.rows[name] = n

    def _check_on_policy(self, decl: ast.RolloutDecl, n: int) -> None:
        """`on_policy = λ`: a batch that does not sample holds the dataset's completions instead,
        one per prompt, so the rollout must draw one sample and the data have one completion set."""
        data_sets = [s for s, info in self.sets.items() if info.source == "data" and info.rows == EXAMPLES]
        if n != 1 or len(data_sets) != 1:
            self.sink.add(error("E0403", "`on_policy` needs one sample per prompt (n = 1) and data with one "
                                         "completion set to fall back on", decl.span,
                                help="e.g. `data sft` and `rollout y = sample(policy, n = 1, on_policy = 0.5)`: with "
                                     "probability 0.5 a batch samples y, otherwise y is the dataset's completions"))

    def _options(self, c: ast.Call, allowed: dict, what: str) -> dict:
        """Constant keyword options of a call, each checked against its declared type."""
        out = {}
        for kw in c.kwargs:
            if kw.name not in allowed:
                self.sink.add(error("E0209", f"`{what}` has no option `{kw.name}`", kw.name_span,
                                    help=did_you_mean(kw.name, allowed) or
                                    (f"options: {', '.join(allowed)}" if allowed else f"`{what}` takes no options")))
                continue
            try:
                value = const_eval(kw.value, self._param_lookup)
            except NotConstant as exc:
                self.sink.add(error(exc.code, option_message(kw.name, exc), exc.span, exc.what))
                continue
            want = allowed[kw.name]
            if want == "int" and isinstance(value, float) and value.is_integer() and abs(value) <= MAX_EXACT_INT:
                value = int(value)  # e.g. `n = group / 2`; beyond 2^53 a double names no exact int
            ok = (isinstance(value, bool) if want == "bool" else
                  not isinstance(value, bool) and isinstance(value, int if want == "int" else (int, float)))
            if not ok:
                self.sink.add(error("E0403", f"option `{kw.name}` takes a{'n' if want == 'int' else ''} "
                                             f"{want}, got {value!r}", kw.span))
                continue
            bad = B.option_range_error(kw.name, value)
            if bad:
                self.sink.add(error("E0403", bad, kw.span))
                continue
            out[kw.name] = value
        return out

    def _declare_reward(self, name: str, decl: ast.RewardDecl) -> None:
        if name in B.ALL:  # rewards are applied like functions: `r(y)`
            self.sink.add(error("E0202", f"reward `{name}` would shadow the builtin `{name}`", decl.span,
                                help=f"give the reward another name, e.g. `{name}_reward`"))
            return
        terms = self._reward_terms(decl.expr, 1.0)
        if terms is not None:
            self.rewards[name] = tuple(terms)

    def _reward_terms(self, e: ast.Expr, w: float):
        if isinstance(e, ast.Call) and e.func in B.REWARD_SOURCES:
            if len(e.args) == 1 and isinstance(e.args[0], ast.String) and not e.kwargs:
                return [RewardTerm(w, e.func, e.args[0].value)]
            self.sink.add(error("E0209", f"`{e.func}` takes one string", e.span,
                                help=f'e.g. `{e.func}("accuracy")`'))
            return None
        if isinstance(e, ast.Binary) and e.op in "+-":
            a = self._reward_terms(e.left, w)
            b = self._reward_terms(e.right, w if e.op == "+" else -w)
            return a + b if a is not None and b is not None else None
        if isinstance(e, ast.Binary) and e.op == "*":
            for k, s in ((e.left, e.right), (e.right, e.left)):
                try:
                    c = const_eval(k, self._param_lookup)
                    weight = arith("*", w, c)
                except NotConstant as exc:
                    if exc.code != "E0403":  # a constant that overflows is wrong, not a non-constant
                        self.sink.add(error(exc.code, "bad reward weight", exc.span, exc.what))
                        return None
                    continue
                except ConstError as exc:
                    self.sink.add(error("E0404", "bad reward weight", e.span, exc.what))
                    return None
                return self._reward_terms(s, weight)
        self.sink.add(error("E0212", "a reward is a weighted sum of `verifier(\"name\")` and "
                                     "`reward_model(\"path\")` sources", e.span, "not a reward source",
                            help='e.g. `reward r = 0.8 * verifier("accuracy") + 0.2 * verifier("format")`'))
        return None

    def _param_lookup(self, name: str, span: Span):
        if name in self.params:
            return self.params[name]
        raise NotConstant(span, f"`{name}` is not a parameter")

    def taken(self) -> set[str]:
        """Names bound to something other than a role."""
        m = self.m
        return set(m.lets) | set(m.params) | set(m.rewards) | set(m.rollouts) | set(self.sets) | set(self.fields)

    # ---- graph -------------------------------------------------------------------

def role_help(name: str, roles, taken) -> str:
    """Help for a name used as a model that is not a role: a close role name; else, if the
    name is not `taken` by anything else, how to declare it (`reference = frozen(policy)`)."""
    close = did_you_mean(name, roles)
    if close:
        return close
    if name.isidentifier() and name not in taken:
        return (f"declare it as a role first, e.g. `{name} = frozen(policy)` (a frozen copy of the "
                f"policy) or `{name} = model(\"path or hub id\")`")
    return f"model roles here: {', '.join(f'`{r}`' for r in roles)}"


def option_message(name: str, exc: NotConstant) -> str:
    if exc.code == "E0404":
        return f"option `{name}` has no finite value"
    return f"option `{name}` must be a constant"  # E0403; E0405 (i10-time): a value that changes in training


def _as_call(d: ast.DataDecl) -> ast.Call:
    """A data line's options, as keyword arguments for option checking."""
    return ast.Call(d.kind, d.span, (), d.options, d.span)


def _is_name(e: ast.Expr, name: str) -> bool:
    return isinstance(e, ast.Name) and e.id == name


def _single_name(c: ast.Call) -> str | None:
    if len(c.args) == 1 and isinstance(c.args[0], ast.Name) and not c.kwargs:
        return c.args[0].id
    return None



def declare(m: MethodDef, params: dict, sink: Sink) -> Declarations:
    dec = _Declarer(m, params, sink)
    dec.declare()
    dec.d.taken = dec.taken()
    return dec.d


def _environment_arg(c: ast.Call) -> str | None:
    """The NAME of `episode(MODEL, environment("NAME"), …)`, or None when the call is not that."""
    if c.func != "episode" or len(c.args) != 2:
        return None
    env = c.args[1]
    ok = isinstance(env, ast.Call) and env.func == "environment" and len(env.args) == 1 \
        and isinstance(env.args[0], ast.String) and not env.kwargs
    return env.args[0].value if ok else None
