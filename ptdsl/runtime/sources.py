"""Several data sources at run time: which file feeds each, and which rows of each a
batch of experience holds (the spec's `data NAME: KIND` lines and `mix`, ir/sources.py).

`--data PATH` feeds a spec's one dataset; `--data NAME=PATH`, once per source, feeds named
sources. Without any --data the embedded default makes up rows for every source (each its
own slice of the synthetic task); given for some sources only, the others are an error.

The first source defines the run: an epoch is one pass over its rows (runtime/experience.py
draws them from a seeded permutation per epoch). Every other source holds
`--batch-size × weight / first weight` rows per micro-batch, a whole number, and is read as
an endless sequence of seeded permutations of its rows, one per cycle: experience k takes the
next rows of that sequence, so every row is used once per cycle, and which rows experience k
holds depends only on the seed and k (a resumed run draws what the uninterrupted run drew).
Example indices are unique across sources (the first keeps 0, 1, …; each next source starts
after the last), so random draws, the precompute cache and saved experiences tell them apart.
"""
from __future__ import annotations

from dataclasses import dataclass

from ptdsl.runtime.datafiles import is_dataset_object
from ptdsl.runtime.errors import RuntimeSetupError


@dataclass(frozen=True)
class Share:
    """A source after the first: its row space, rows per micro-batch per process, usable rows."""

    rows: str
    batch: int
    n: int


def data_paths(data, sources, flag: str = "--data") -> dict[str, str | None]:
    """Row space → the file that feeds it (None: the embedded default). `data` is None, a path,
    a `NAME=PATH` string, or a list of them (the CLI's repeated --data), or a dict; `flag` is how
    messages name the option (--eval-data for held-out rows)."""
    names = [s.rows for s in sources]
    named = any(s.named for s in sources)
    given = _given(data)
    if not given:
        return dict.fromkeys(names)
    if not named:
        if len(given) > 1:
            raise RuntimeSetupError(f"{flag} is given more than once, and the method reads one dataset",
                                    help=f"give one {flag} PATH")
        name, path, raw = given[0]
        if name is not None and not _exists(raw):
            raise RuntimeSetupError(f"{flag} names the source `{name}`, and the method reads one unnamed dataset",
                                    help=f"give the dataset as {flag} PATH")
        return {names[0]: path if name is None else raw}  # `a=b` naming no source: a file's name
    out: dict[str, str | None] = {}
    for name, path, raw in given:
        if name is None:
            raise RuntimeSetupError(f"{flag} `{raw}` does not say which source it feeds; the method reads "
                                    f"{_listed(names)}", help=f"give each as {flag} NAME=PATH, e.g. {flag} {names[0]}={raw}")
        if name not in names:
            raise RuntimeSetupError(f"{flag} names `{name}`, which the method does not declare; its sources are "
                                    f"{_listed(names)}", help=_close(name, names, flag))
        if name in out:
            raise RuntimeSetupError(f"{flag} gives source `{name}` twice", help="give each source once")
        out[name] = path
    missing = [n for n in names if n not in out]
    if missing:
        raise RuntimeSetupError(f"source{'s' if len(missing) > 1 else ''} {_listed(missing)} "
                                f"{'have' if len(missing) > 1 else 'has'} no data",
                                help=" ".join(f"{flag} {n}=PATH" for n in missing) + " (the embedded default "
                                "supplies every source only when no --data is given)")
    return out


def _given(data) -> list[tuple[str | None, str, str]]:
    """(source name or None, path, as written) for each --data value."""
    if data is None:
        return []
    # a datasets.Dataset / DatasetDict (a dict subclass, of splits) or another object: read as it is
    if is_dataset_object(data) or not isinstance(data, (str, list, tuple, dict)):
        return [(None, data, f"a {type(data).__name__}")]
    if isinstance(data, dict):
        return [(k, v, f"{k}={v}") for k, v in data.items()]
    values = [data] if isinstance(data, str) else list(data)
    out = []
    for v in values:
        name, sep, path = v.partition("=")
        out.append((name, path, v) if sep and name.isidentifier() else (None, v, v))
    return out


def _exists(path: str) -> bool:
    from pathlib import Path
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def _listed(names) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _close(name: str, names, flag: str) -> str:
    from ptdsl.diagnostics import did_you_mean
    return did_you_mean(name, names) or f"give {flag} {names[0]}=PATH for each source"


def load_sources(compiled, data, load, seed: int, flag: str = "--data", offset: int = 0) -> dict[str, list]:
    """Row space → tokenised examples of every source, the first first. `load(source, path,
    seed)` loads one (runtime/setup.load_examples); each source after the first gets another
    slice of the embedded task (its own seed) and indices after the previous source's (the first
    from `offset`: held-out rows are numbered after the training rows)."""
    from ptdsl.runtime.data import only_source
    sources = compiled.plan.sources or (only_source(compiled.plan),)
    paths = data_paths(data, sources, flag)
    out = {}
    for j, source in enumerate(sources):
        examples = load(source, paths[source.rows], seed + 7919 * j)
        for e in examples:
            e.index += offset
        offset = max(e.index for e in examples) + 1
        out[source.rows] = examples
    return out


def shares(sources, examples: dict, batch_size: int) -> tuple[Share, ...]:
    """Each source after the first: its rows per micro-batch, or a RuntimeSetupError with the
    numbers (before step 1)."""
    if len(sources) < 2:
        return ()
    first = sources[0]
    out = []
    for s in sources[1:]:
        rows = batch_size * s.weight / first.weight
        if abs(rows - round(rows)) > 1e-9 or round(rows) < 1:
            raise RuntimeSetupError(
                f"`mix` gives source `{s.rows}` {rows:g} rows per micro-batch (--batch-size {batch_size} × weight "
                f"{s.weight:g} / {first.rows}'s {first.weight:g}), not a whole number ≥ 1",
                help="choose a --batch-size or weights that make each source's rows a whole number")
        out.append(Share(s.rows, int(round(rows)), len(examples[s.rows])))
    return tuple(out)


def stream(n: int, k: int, size: int, seed: int, name: str) -> list[int]:
    """Positions in a source of n rows that experience k holds: rows k·size … (k+1)·size − 1 of
    an endless sequence of seeded permutations of the n rows, one per cycle."""
    import torch

    from ptdsl.runtime.draws import seed_of
    perms: dict[int, list[int]] = {}
    out = []
    for pos in range(k * size, (k + 1) * size):
        cycle, i = divmod(pos, n)
        if cycle not in perms:
            g = torch.Generator().manual_seed(seed_of(seed, "source", name, cycle))
            perms[cycle] = torch.randperm(n, generator=g).tolist()
        out.append(perms[cycle][i])
    return out
