"""`ptdsl train METHOD …`: train with a compiled method (runtime/loop.py).

With no --model and --data it runs the embedded default: a tiny model with random
weights, a character tokenizer and synthetic arithmetic data of the method's kind.
Under several processes: `accelerate launch -m ptdsl train …`.

Options come from the table in train_flags.py: on the command line (ptdsl's flags or
TRL's names), or in a YAML `--config` file whose keys are any of those names; a flag
given on the command line wins over the file."""
from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path

from ptdsl.cli.train_flags import OPTS, Opt, add_to, config_names


def register(sub) -> None:
    s = sub.add_parser("train", help="train a model with a method (embedded default without --model/--data)")
    s.add_argument("method", nargs="?", help="a library method or spec file (or `method:` in --config)")
    s.add_argument("--config", metavar="FILE.yaml", help="train options in a YAML file (keys: any option's "
                   "name, e.g. learning_rate, per_device_train_batch_size, set); command-line flags override it")
    s.add_argument("--format", choices=["text", "json"], default="text",
                   help="json: print the final summary (method, output, steps, last metrics) as one JSON object")
    add_to(s)
    s.set_defaults(fn=cmd_train)


def cmd_train(args) -> int:
    from ptdsl.cli.main import Usage
    from ptdsl.runtime.errors import RuntimeSetupError
    from ptdsl.runtime.loop import train
    given = _from_config(args.config) if args.config else {}
    given.update({o.key: getattr(args, o.key) for o in OPTS if getattr(args, o.key) is not None})
    method = args.method or given.pop("method", None)
    given.pop("method", None)
    if method is None:
        raise Usage("train needs a METHOD (a library name or a spec file), or `method:` in --config")
    kwargs = _train_kwargs(given)
    try:
        last = train(method, **kwargs)
    except RuntimeSetupError as err:
        print(err.render(), file=sys.stderr)
        return 1
    _summary(args.format, method, kwargs, last)
    return 0


def _train_kwargs(given: dict) -> dict:
    """train()'s keywords from the options given: sampling overrides into `rollout`, `--set`
    pairs parsed into `params`, repeatable options as tuples."""
    from ptdsl.cli.main import parse_overrides
    kwargs, rollout = {}, {}
    for key, value in given.items():
        if key.startswith("rollout."):
            rollout[key.split(".", 1)[1]] = value
        elif key == "params":
            kwargs["params"] = value if isinstance(value, dict) else parse_overrides(value)
        elif key == "report_to":
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    if rollout:
        kwargs["rollout"] = rollout
    return kwargs


def _summary(fmt: str, method: str, kwargs: dict, last: dict) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # one summary per run, not one per process (as the log lines)
        return
    out = Path(kwargs.get("output", "out"))
    from ptdsl.runtime.reporters import stores
    files = {"metrics_file": str(out / "metrics.jsonl"), "model": str(out / "final"),
             "plot": f"ptdsl plot {out}", "reporters": stores(kwargs.get("report_to", ()), out)}
    if fmt == "json":
        print(json.dumps({"method": method, "output": str(out), **files, "steps": last.get("step"),
                          "metrics": last}, default=str))
    elif not kwargs.get("quiet"):
        print(f"done: metrics in {files['metrics_file']}, model in {files['model']}")
        print(f"curves: `{files['plot']}` writes {out / 'curves.png'}")
        for line in files["reporters"]:
            print(f"  {line}")


# ---- the config file --------------------------------------------------------------------

def _from_config(path: str) -> dict:
    """{train() keyword: value} from a YAML mapping, each key and value checked (a mistyped key
    gets the nearest names; a value of the wrong type names the key and the file)."""
    from ptdsl.cli.main import Usage
    table = _read_yaml(path)
    names, out = config_names(), {}
    for name, value in table.items():
        if name == "method":
            out["method"] = str(value)
            continue
        opt = names.get(str(name))
        if opt is None:
            near = difflib.get_close_matches(str(name), list(names) + ["method"], n=3)
            hint = f"; did you mean {', '.join(f'`{n}`' for n in near)}?" if near else ""
            raise Usage(f"{path}: unknown option `{name}`{hint}")
        if value is None:
            continue
        key, value = _config_value(path, str(name), opt, value)
        if key is not None:
            out[key] = value
    return out


def _read_yaml(path: str) -> dict:
    import yaml
    from ptdsl.cli.main import Usage
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise Usage(f"--config {path}: {exc.strerror or exc}") from None
    try:
        table = yaml.safe_load(text)  # safe_load: a config builds plain data, never Python objects
    except yaml.YAMLError as exc:
        raise Usage(f"--config {path} is not valid YAML: {exc}") from None
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise Usage(f"--config {path} must be a mapping of option names to values, not a {type(table).__name__}")
    return table


def _config_value(path: str, name: str, opt: Opt, value):
    """(train() keyword, value) for one config entry, or (None, None) for a switch set to false."""
    from ptdsl.cli.main import Usage
    where = f"{path}: `{name}`"
    if opt.type is None:  # a switch: by the keyword, the value itself (precompute: false); by its flag, on/off
        if not isinstance(value, bool):
            raise Usage(f"{where} takes true or false, not {value!r}")
        if name == opt.key:
            return opt.key, value
        return (opt.key, opt.switch) if value else (None, None)
    if opt.key == "params" and isinstance(value, dict):
        return opt.key, value
    if not opt.many and isinstance(value, list):
        raise Usage(f"{where} takes one value, not a list")
    checked = [_typed(where, opt, v) for v in (value if isinstance(value, list) else [value])]
    return opt.key, checked if opt.many else checked[0]


def _typed(where: str, opt: Opt, value):
    from ptdsl.cli.main import Usage
    ok = {int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, (str, int, float)) and not isinstance(value, bool)}[opt.type]
    if not ok:
        raise Usage(f"{where} takes {'a number' if opt.type in (int, float) else 'text'}, not {value!r}")
    value = opt.type(value)
    if opt.choices and value not in opt.choices:
        raise Usage(f"{where} is one of {', '.join(opt.choices)}, not {value!r}")
    return value
