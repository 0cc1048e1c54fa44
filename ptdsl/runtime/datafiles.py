"""Reading a dataset into rows, exactly as the file holds them.

JSON, JSON Lines and CSV are read here, not through `datasets`: its loaders fill a
row's missing keys with None, unify a column's types across rows (a blank CSV cell
turns an integer column into floats, so `2` trains as "2.0") and fail on bad bytes
with an error that names neither the file nor the line. Here a row keeps its own
keys and values, every row remembers its line, and a bad file is one clear
RuntimeSetupError naming the file and the first few bad lines. Parquet (typed by its
schema) is read with pyarrow; saved dataset directories and hub names still go
through `datasets`.

Rows are numbered from 1 in file order, everywhere a message names one.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ptdsl.runtime.errors import RuntimeSetupError

SHOWN = 5  # bad lines named in one message; the rest are counted


@dataclass
class Table:
    rows: list[dict]
    source: str                       # what the user gave, for messages
    lines: list[int] | None = None    # the line each row starts on (JSON Lines, CSV)
    textual: bool = False             # every value is text (CSV): validation parses labels and numbers

    def where(self, i: int) -> str:
        """Row i (0-based position) as the user counts it: 'row 3 (line 4)'."""
        return f"row {i + 1}" + (f" (line {self.lines[i]})" if self.lines else "")


@dataclass(frozen=True)
class Split:
    """One split of a DatasetDict, which messages name (the `test` split a run evaluates on)."""

    dataset: object
    name: str

    def __len__(self) -> int:
        return len(self.dataset)


def read_table(source) -> Table:
    """Rows from a local .json/.jsonl/.csv/.parquet file, a saved dataset directory, a hub name, or
    (from Python) a `datasets.Dataset` or `DatasetDict` object, or a Split."""
    if isinstance(source, Split):
        return Table([dict(r) for r in source.dataset], f"the DatasetDict's {source.name} split")
    if not isinstance(source, (str, os.PathLike)):
        return _from_object(source)
    path = Path(source).expanduser()
    if path.is_file():
        reader = READERS.get(path.suffix.lower())
        if reader is None:
            raise RuntimeSetupError(f"cannot read `{source}`: use .json, .jsonl, .parquet or .csv")
        return reader(path, source)
    if not path.exists() and _names_a_local_file(path, source):
        raise RuntimeSetupError(f"no such file: `{source}`" + (f" (looked in {Path.cwd()})" if not path.is_absolute()
                                                              else ""),
                                help="check the path; a hub dataset is named `org/name` with no file suffix")
    return _with_datasets(path, source)


def is_dataset_object(obj) -> bool:
    """A datasets.Dataset or DatasetDict (the latter is a dict of splits), told apart without
    importing datasets."""
    return type(obj).__module__.split(".")[0] == "datasets"


def _from_object(ds, source: str = "the Dataset given") -> Table:
    """A Dataset's rows; a DatasetDict's `train` split (its other splits are not read)."""
    import datasets
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise RuntimeSetupError(f"the DatasetDict ({source}) has no `train` split (it has "
                                    f"{', '.join(map(repr, ds))})", help="give one with a `train` split, or from "
                                    "Python the split to train on, e.g. data=ds[\"validation\"]")
        ds = ds["train"]
    if not isinstance(ds, datasets.Dataset):
        raise RuntimeSetupError(f"data must be a path, a hub name, or a datasets.Dataset / DatasetDict, not "
                                f"{type(ds).__name__}", help="e.g. datasets.Dataset.from_list(rows)")
    return Table([dict(r) for r in ds], source)


def _names_a_local_file(path: Path, source: str) -> bool:
    """Whether `source` can only mean a local file, not a hub dataset (`org/name`): a data-file
    suffix, an absolute or explicitly relative path, a home-relative one, or a path whose
    folder exists here but not the file."""
    if path.suffix.lower() in READERS or source.startswith(("/", "./", "../", "~", ".\\")):
        return True
    return len(path.parts) > 1 and path.parent.is_dir() and str(path.parent) != "."


def _text(path: Path, source: str) -> str:
    """The file as UTF-8 text (a leading BOM dropped); bad bytes name their line and column."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RuntimeSetupError(
            f"`{source}` is not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, column {column} "
            f"(byte offset {exc.start}) cannot be decoded", help="re-encode the file as UTF-8, e.g. "
            "`iconv -f latin1 -t utf-8 FILE > NEW`") from None


def _bad_lines(source: str, what: tuple[str, str], bad: list[str], help: str) -> RuntimeSetupError:
    """`what`: (singular, plural) of the sentence after the count."""
    more = f"\n  … and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    return RuntimeSetupError(f"`{source}`: {len(bad)} {what[len(bad) > 1]}:\n"
                             + "\n".join(f"  {b}" for b in bad[:SHOWN]) + more, help=help)


def _json_lines(text: str, source: str) -> Table:
    rows, lines, bad = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue  # a blank line (often the last) is no row
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(f"line {n}, column {exc.colno}: {exc.msg}")
            continue
        if not isinstance(value, dict):
            bad.append(f"line {n}: a JSON {_json_type(value)}, not an object")
            continue
        rows.append(value)
        lines.append(n)
    if bad:
        raise _bad_lines(source, ("line is not a JSON object", "lines are not JSON objects"), bad,
                         "JSON Lines holds one JSON object (a row) per line")
    return Table(rows, source, lines)


def _read_jsonl(path: Path, source: str) -> Table:
    return _json_lines(_text(path, source), source)


def _read_json(path: Path, source: str) -> Table:
    """A JSON array of row objects, an object of equal-length columns, or JSON Lines in a .json file."""
    text = _text(path, source)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # a second value after the first: JSON Lines, as `datasets` accepts
            return _json_lines(text, source)
        raise RuntimeSetupError(f"`{source}` is not valid JSON: line {exc.lineno}, column {exc.colno}: "
                                f"{exc.msg}") from None
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        value = _columns_to_rows(value, source)
    if not isinstance(value, list):
        raise RuntimeSetupError(f"`{source}` holds a JSON {_json_type(value)}; a dataset is a list of "
                                "row objects (or JSON Lines: one object per line)")
    bad = [f"row {i + 1}: a JSON {_json_type(v)}, not an object" for i, v in enumerate(value)
           if not isinstance(v, dict)]
    if bad:
        raise _bad_lines(source, ("row is not a JSON object", "rows are not JSON objects"), bad,
                         "each row is an object of columns")
    return Table(value, source)


def _columns_to_rows(columns: dict, source: str) -> list[dict]:
    sizes = {k: len(v) for k, v in columns.items()}
    if len(set(sizes.values())) > 1:
        raise RuntimeSetupError(f"`{source}` holds columns of different lengths: "
                                + ", ".join(f"`{k}` {n}" for k, n in sizes.items()))
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def _json_type(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _read_csv(path: Path, source: str) -> Table:
    """A header line, then one row per record; a blank cell is a missing value (None), as
    in `datasets` and pandas. Values stay text: the schema decides what a cell means."""
    reader = csv.reader(io.StringIO(_text(path, source), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise RuntimeSetupError(f"`{source}` is empty: a CSV dataset starts with a header line")
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup or "" in header:
            raise RuntimeSetupError(f"`{source}`: the header names a column twice or leaves one unnamed: "
                                    f"{', '.join(f'`{h}`' for h in dup or [''])}")
        rows, lines, bad, start = [], [], [], reader.line_num + 1
        for record in reader:
            if record and len(record) != len(header):
                bad.append(f"line {start}: {len(record)} cells, the header has {len(header)}")
            elif record:
                rows.append({h: (c if c != "" else None) for h, c in zip(header, record)})
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise RuntimeSetupError(f"`{source}` is not valid CSV: line {reader.line_num}: {exc}") from None
    if bad:
        raise _bad_lines(source, ("line has another number of cells than the header",
                                  "lines have another number of cells than the header"), bad,
                         "quote cells that contain commas or line breaks")
    return Table(rows, source, lines, textual=True)


def _read_parquet(path: Path, source: str) -> Table:
    import pyarrow.parquet as pq
    try:
        return Table(pq.read_table(path).to_pylist(), source)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for one cause: a bad file
        raise RuntimeSetupError(f"`{source}` is not a readable Parquet file: {type(exc).__name__}: {exc}") \
            from None


def _with_datasets(path: Path, source: str) -> Table:
    import datasets
    try:
        if _saved(path):
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(source, split="train")
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; report one clear message
        raise RuntimeSetupError(f"cannot load dataset `{source}`: {type(exc).__name__}: {exc}",
                                help="give a local .json/.jsonl/.csv/.parquet file, a saved dataset "
                                     "directory, or a hub name reachable from this machine") from None
    return _from_object(ds, source)


def _saved(path: Path) -> bool:
    """A directory `save_to_disk` wrote: a Dataset's, or a DatasetDict's (its splits in subdirectories)."""
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists())


def test_split(source):
    """The `test` split of a DatasetDict — an object, or a directory `save_to_disk` wrote — or None:
    the held-out rows a run evaluates on when no --eval-data is given (read_table reads `train`)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not _saved(path):
            return None
        import datasets
        try:
            source = datasets.load_from_disk(str(path))
        except Exception:  # noqa: BLE001 - read_table has reported (or will report) what is wrong with it
            return None
    elif type(source).__module__.split(".")[0] != "datasets":
        return None
    return Split(source["test"], "test") if isinstance(source, dict) and "test" in source else None


READERS = {".json": _read_json, ".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}
