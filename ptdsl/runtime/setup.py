"""Everything a run needs before step 1: the tokenizer, the models the plan names
(policy, frozen copies, named models, value heads, separate critics), and the
tokenised, checked dataset. With no --model and --data, the embedded default (embedded.py; for a
method that plays episodes, embedded_tools.py: a tokenizer with tool support, a warm-started model
and a task where the calculator helps)."""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import torch

from ptdsl.ir.datakinds import DATA_KINDS
from ptdsl.runtime import chat
from ptdsl.runtime import data as D
from ptdsl.runtime import critic as C
from ptdsl.runtime import embedded, embedded_tools
from ptdsl.runtime import model_options as MO
from ptdsl.runtime.datafiles import Table, read_table
from ptdsl.runtime.errors import RuntimeSetupError
from ptdsl.runtime.validate import Problem, report, validate


@dataclass
class Models:
    policy: torch.nn.Module
    tokenizer: object
    frozen: dict[str, torch.nn.Module] = field(default_factory=dict)   # role → frozen model
    heads: dict[str, torch.nn.Module] = field(default_factory=dict)    # value-head role → head
    critics: dict[str, torch.nn.Module] = field(default_factory=dict)  # critic role → critic.Critic
    ids: dict[str, str] = field(default_factory=dict)                  # role → what it was loaded from
    trunk: torch.nn.Module | None = None  # the policy as prepared by accelerate (runtime/queries.Trunk)

    def trainable(self) -> list[torch.nn.Module]:
        """The modules the optimizer trains: the policy's trunk, value heads, critics."""
        return [m for m in (self.trunk, *self.heads.values(), *self.critics.values()) if m is not None]


def _needs_scorer(compiled) -> bool:
    return any(q.output in ("score", "token_score") and q.model == "policy" for q in compiled.plan.queries)


def load_tokenizer(model_id: str | None, given=None, chat_template: str | None = None, episodes: bool = False):
    """The tokenizer of `model_id` (None: the embedded one; with `episodes`, the embedded one with tool
    support), or `given` (an object or a path) prepared as training needs it: a pad token, left
    padding (a copy: the caller's object is not changed); `chat_template` (a file, or `plain`)
    replaces its chat template."""
    if model_id is None and given is None:
        tok = embedded_tools.tokenizer() if episodes else embedded.tokenizer()
    else:
        if given is not None and not isinstance(given, (str, os.PathLike)):
            tok = copy.deepcopy(given)
        else:
            from transformers import AutoTokenizer
            where = given if given is not None else model_id
            try:
                tok = AutoTokenizer.from_pretrained(where)
            except (OSError, ValueError) as exc:
                raise RuntimeSetupError(f"cannot load the tokenizer of `{where}`: {exc}",
                                        help="pass tokenizer= (an object or a path) to ptdsl.train") from None
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"  # generation needs left padding
    if chat_template is not None:
        tok.chat_template = chat.read_template(chat_template)
    return tok


def _load_lm(model_id: str, scorer: bool, loading: MO.Loading = MO.Loading()):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    cls = AutoModelForSequenceClassification if scorer else AutoModelForCausalLM
    try:
        return cls.from_pretrained(model_id, **({"num_labels": 1} if scorer else {}), **MO.pretrained_kwargs(loading))
    except OSError as exc:
        raise RuntimeSetupError(f"cannot load model `{model_id}`: {exc}",
                                help="give a local directory or a hub id reachable from this machine") from None


class AdapterDisabled(torch.nn.Module):
    """A PEFT policy's base model: the policy with its adapters disabled (no copy).

    runtime/queries.py runs it inside `disable_adapter()`; it shares the policy's
    (frozen) base weights, which LoRA training never changes."""

    def __init__(self, peft_model):
        super().__init__()
        self.peft = peft_model


def load_models(compiled, model, seed: int, lora_r: int = 0, lora_alpha: int = 16,
                log=print, tokenizer=None, chat_template: str | None = None,
                loading: MO.Loading = MO.Loading()) -> Models:
    """`model`: a path or hub id, a loaded transformers model (trained in place, as a TRL trainer
    does), or None (the embedded default); `tokenizer` goes with an object (default: the one saved
    beside it, found through its `name_or_path`); `chat_template`: --chat-template; `loading`: dtype,
    attention, gradient checkpointing and LoRA options (runtime/model_options.py)."""
    scorer = _needs_scorer(compiled)
    given = model if isinstance(model, torch.nn.Module) else None
    if given is None and model is not None and not isinstance(model, (str, os.PathLike)):
        raise RuntimeSetupError("model must be a path, a hub id or a transformers model, not "
                                f"{type(model).__name__} {model!r:.40}")
    if model is None and tokenizer is not None:
        raise RuntimeSetupError("tokenizer= is given without model=: the embedded default brings its own tokenizer",
                                help="pass the model the tokenizer belongs to as well")
    if given is not None and tokenizer is None and _name_or_path(given) is None:
        raise RuntimeSetupError(f"the model given ({type(given).__name__}) does not say where it was loaded from "
                                "(no name_or_path), so its tokenizer cannot be found", help="pass tokenizer=")
    model_id = _identity(given) if given is not None else (str(model) if model is not None else None)
    episodes = embedded_tools.applies(compiled.plan)
    tok = load_tokenizer(_name_or_path(given) if given is not None else model_id, tokenizer, chat_template, episodes)
    if given is not None:
        policy = MO.apply(_checked_object(given, scorer), loading)
    elif model_id is None and episodes and not scorer:
        policy = MO.apply(embedded_tools.model(tok, seed, log=log), loading)
    elif model_id is None:
        policy = MO.apply(embedded.model(tok, seed, sequence_classifier=scorer), loading)
    else:
        policy = _load_lm(model_id, scorer, loading)
    MO.checkpointing(policy, loading, log)
    if getattr(policy.config, "pad_token_id", None) is None:
        policy.config.pad_token_id = tok.pad_token_id
    # critics first: `critic(policy)` copies the policy's body as loaded, before LoRA adapters
    critics = {c.name: C.build(c, policy, model_id, tok, seed, log) for c in compiled.plan.learners}
    lora = bool(lora_r or loading.lora_path)
    if lora:
        policy = MO.lora(policy, lora_r, lora_alpha, loading)
    MO.training_mode(policy, loading)
    models = Models(policy, tok, ids={"policy": (model_id or f"embedded(seed={seed})") + MO.tag(loading)},
                    critics=critics)
    roles = compiled.graph.graph["roles"]
    used = {q.model for q in compiled.plan.queries} | {r.model for r in compiled.plan.rollouts.values()}
    for name in list(used):  # a mixture samples from two models: both are loaded
        if roles.get(name) is not None and roles[name].kind == "mixture":
            used |= {roles[name].of, dict(roles[name].options)["with"]}
    for name in sorted(used):
        role = roles.get(name)
        if role is None or role.kind in ("policy", "old", "mixture", "critic"):
            continue
        if role.kind == "frozen_copy":
            moving = dict(role.options).get("sync_steps")
            if lora and moving:
                raise RuntimeSetupError(f"`{name}` moves toward the policy (sync_steps), which needs a copy, "
                                        "not the adapter-disabled base of a LoRA policy",
                                        help="train without --lora-r, or drop sync_steps")
            # with LoRA the base model is the reference: no second copy of the weights
            models.frozen[name] = AdapterDisabled(policy) if lora else _freeze(copy.deepcopy(policy))
            models.ids[name] = models.ids["policy"]
        elif role.kind == "model":
            path = role.source[len('model("'):-2]
            if model_id is None:  # the embedded default has no named models: say that one stands in
                log(f"note: `{name} = model(\"{path}\")` is not loaded with the embedded default: another tiny "
                    f"model with random weights (seed {seed + 1}) stands in; give --model to load `{path}`")
            models.frozen[name] = _freeze(MO.apply(embedded.model(tok, seed + 1), loading) if model_id is None
                                          else _load_lm(path, False, loading))
            models.ids[name] = path + MO.tag(loading)
        elif role.kind == "value_head":
            torch.manual_seed(seed + 2)
            models.heads[name] = torch.nn.Linear(policy.config.hidden_size, 1)
    return models


def _name_or_path(model) -> str | None:
    return getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None) or None


def _identity(model) -> str:
    """What a model object is, for caches keyed by model (precomputed reference log-probs): its
    name and a fingerprint of its weights (shape, sum, sum of squares of each tensor), so a
    changed object is never served another's cached outputs."""
    import hashlib
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t = t.detach().double()
            h.update(f"{name}{tuple(t.shape)}{float(t.sum())}{float((t * t).sum())}".encode())
    return f"{_name_or_path(model) or type(model).__name__}@{h.hexdigest()[:16]}"


def _checked_object(model, scorer: bool):
    """A model object the method can train: a causal LM (a sequence classifier where the spec
    reads `score`), named in the error otherwise."""
    want = "a sequence classifier (the spec reads its score)" if scorer else "a causal LM"
    fits = hasattr(model, "score") if scorer else hasattr(model, "get_output_embeddings") and \
        model.get_output_embeddings() is not None
    if not fits:
        raise RuntimeSetupError(f"the model given ({type(model).__name__}) is not {want}",
                                help="e.g. AutoModelForCausalLM.from_pretrained(...)" if not scorer else
                                "e.g. AutoModelForSequenceClassification.from_pretrained(..., num_labels=1)")
    return model


def _freeze(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_examples(compiled, data: str | None, tok, max_length: int, max_prompt_length: int | None,
                  seed: int, log=print, step_separator: str | None = None, require_columns: tuple[str, ...] = (),
                  skip_invalid_rows: bool = False, limit: int | None = None, source=None):
    """Tokenised examples of one data source (default: the method's first, ir/sources.Source;
    the first `limit` usable ones, if given). Every row is validated first (validate.py): the
    kind's columns, the numeric fields the spec names, and `require_columns` (the columns
    verifiers read: present and not null in every row). A row that does not fit is an error
    naming it, or with `skip_invalid_rows` a counted skip. Sets and fields come out under the
    spec's names (a source may rename them)."""
    source = source or D.only_source(compiled.plan)
    kind = source.kind
    own = tuple(f for f, _ in DATA_KINDS[kind].fields) + tuple(f for f, _, _ in DATA_KINDS[kind].token_fields)
    extra = tuple(f for f in source.extra if f in compiled.plan.fields)  # numeric columns the spec reads
    fields = own + extra
    # messages name the source where there are several: "`npo_rt` source `retain`"
    label = f"{compiled.name}` source `{source.rows}" if source.named else compiled.name
    table = _embedded_table(label, kind, seed, extra, log, compiled.graph.graph["rows"].get("responses"),
                            embedded_tools.applies(compiled.plan)) if data is None else read_table(data)
    valid = validate(table, kind, label, extra, tuple(require_columns), skip_invalid_rows, log)
    rows, origins = _normalise(table, valid, kind, tok, label, skip_invalid_rows, log)
    list_rows = DATA_KINDS[kind].list_rows
    size = compiled.graph.graph["rows"].get(list_rows) if list_rows else None
    # the embedded character tokenizer has no newline: its steps are separated by a space
    separator = step_separator if step_separator is not None else (" " if data is None else "\n")
    examples, skipped = D.tokenize(rows, tok, kind, fields, max_length, max_prompt_length, size, separator, limit)
    if str(skipped):
        seen = examples[-1].index + 1 if limit is not None and len(examples) == limit else len(rows)
        log(f"{skipped} (of {len(rows)})" if seen == len(rows) else f"{skipped} (of the first {seen} rows, "
            f"which hold the {limit} usable rows asked for)")
    if not examples:
        raise RuntimeSetupError(f"no usable rows{f' in source `{source.rows}`' if source.named else ''}: {skipped}",
                                help="raise --max-length, or check that completions are not empty")
    for e in examples:  # which row of the user's data it came from, for messages
        e.where = f"{table.where(origins[e.index])} of `{table.source}`"
    return D.renamed(examples, source)


def _embedded_table(label: str, kind: str, seed: int, extra: tuple[str, ...], log, list_size,
                    episodes: bool) -> Table:
    """The synthetic task's rows; a method that plays episodes gets the tool task's prompts."""
    if episodes and kind == "prompts":
        rows = [{**row, **{f: 1.0 for f in extra}} for row in embedded_tools.dataset(seed=seed)]
    else:
        rows = embedded.dataset(kind, seed=seed, fields=extra, list_size=list_size)
    if extra:  # the synthetic task has no such column: say that it was made up
        log(f"note: the embedded dataset has no column {', '.join(f'`{f}`' for f in extra)} "
            f"(`{label}` reads it): every row gets {' and '.join(f'{f} = 1.0' for f in extra)}; "
            "give --data for real values")
    return Table(rows, "the embedded dataset")


def _normalise(table: Table, valid: list[tuple[int, dict]], kind: str, tok, method: str, skip: bool,
               log) -> tuple[list[dict], list[int]]:
    """Validated rows in one shape, with the table position each came from; a conversation the
    chat template rejects names its row."""
    rows, origins, problems = [], [], []
    for i, row in valid:
        try:
            out = D.normalise(row, kind, tok)
        except chat.NoChatTemplate:  # the tokenizer's, not a row's: said once
            raise
        except RuntimeSetupError as exc:
            problems.append(Problem(i, "", str(exc)))
            continue
        rows += out
        origins += [i] * len(out)
    if problems:
        report(table, problems, len(valid) - len(problems), f"`{method}` (data {kind})", skip, log)
    return rows, origins
