"""Tasks: loading (local files or `datasets` names) and validation.

Everything that can be wrong with the data is checked in `load_task`, before any model is built.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from . import synthetic
from .config import TaskConfig
from .errors import UserInputError

_EXTENSIONS = {".tsv": "csv", ".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}
_SPLIT_ALIASES = {"dev": ("dev", "validation", "val"), "test": ("test",)}
_TEXT_GUESSES = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("question", "sentence"), ("sentence",), ("text",))


@dataclass
class TaskData:
    """Raw splits of one task: lists of texts (one or two per example) and integer labels."""

    name: str
    kind: str
    metric: str
    num_labels: int | None
    splits: dict  # split name -> {"texts": list[tuple[str, ...]], "labels": list[int] | None}

    def has(self, split: str) -> bool:
        return split in self.splits


def _local_files(folder: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in _EXTENSIONS:
            files.setdefault(path.stem, path)
    return files


def _read_local(path: Path, task: TaskConfig, where: str) -> tuple[dict, dict]:
    """(split name -> dataset, split name -> its file)."""
    import datasets

    files = _local_files(path) if path.is_dir() else {"train": path}
    odd = next((f for f in files.values() if not f.is_file()), None)
    if odd is not None:  # a FIFO or a device would block the reader forever
        raise UserInputError(f"{where}.source", f"{odd} is not a regular file", "point to a data file or a folder of data files")
    if not files:
        raise UserInputError(f"{where}.source", f"no data files in {path}", f"add train/dev files with one of {', '.join(_EXTENSIONS)}")
    if task.kind == "classification" and any(f.suffix == ".txt" for f in files.values()):
        text_file = next(f for f in files.values() if f.suffix == ".txt")
        raise UserInputError(f"{where}.source", f"{text_file} is plain text, which has no labels",
                             "give a .tsv/.csv/.jsonl/.parquet file with a label column, or use the text with kind: mlm")
    out = {}
    for split, file in files.items():
        builder = _EXTENSIONS[file.suffix]
        kwargs = {"delimiter": "\t", "quoting": 3, "keep_default_na": False} if file.suffix == ".tsv" else {}
        if file.suffix == ".csv":
            kwargs = {"keep_default_na": False}
        try:
            out[split] = datasets.load_dataset(builder, data_files=str(file), split="train", **kwargs)
        except Exception as e:  # datasets refuses header-only files and reports parse errors in many types
            if sum(1 for line in file.open(errors="replace") if line.strip()) <= 1:
                raise UserInputError(f"{where}.source", f"the {split!r} split ({file}) is empty", "point to a file with examples") from None
            check_rows(file, where)  # names the file and line where it can
            raise UserInputError(f"{where}.source", f"cannot read {file} ({type(e).__name__}: {str(e).splitlines()[0][:120]})",
                                 "check the file's format and header") from None
    return out, files


def check_rows(file: Path, where: str, label_column: str | None = None):
    """Find the row that breaks a text data file and say where: a row with more or fewer fields than the header,
    a line that is not JSON, an empty label cell, bytes that are not UTF-8. Returns quietly when none is found."""
    import csv

    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserInputError(f"{where}.source", f"{file} is not UTF-8 text (byte {e.start})", "save it as UTF-8") from None
    if file.suffix in (".tsv", ".csv"):
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE) if file.suffix == ".tsv" else csv.reader(lines)
        header = next(reader, [])
        label = header.index(label_column) if label_column in header else None
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise UserInputError(f"{where}.source", f"{file}, line {line}: {len(row)} fields where the header has {len(header)}",
                                     "fix that row (a stray tab or quote in its text?)")
            if label is not None and not row[label].strip():
                raise UserInputError(f"{where}.{'label_column'}", f"{file}, line {line}: the {label_column!r} cell is empty",
                                     "give every example its label, or remove the row")
    elif file.suffix == ".jsonl":
        for line, text in enumerate(lines, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except ValueError as e:
                raise UserInputError(f"{where}.source", f"{file}, line {line}: not valid JSON ({e.msg}, column {e.colno})",
                                     "fix that line (one JSON object per line)") from None
            if label_column is not None and isinstance(record, dict) and record.get(label_column, "") in ("", None):
                raise UserInputError(f"{where}.label_column", f"{file}, line {line}: no {label_column!r} value",
                                     "give every example its label, or remove the line")


def _read_hub(task: TaskConfig, where: str) -> dict:
    import datasets

    try:
        return dict(datasets.load_dataset(task.source, task.subset))
    except Exception as e:  # datasets raises many types for "not found / offline"
        raise UserInputError(f"{where}.source", f"cannot load dataset {task.source!r} ({type(e).__name__}: {str(e).splitlines()[0][:120]})",
                             "give a local folder, or a `datasets` name reachable from here") from None


def _pick_split(available, requested: str | None, role: str, where: str) -> str | None:
    if requested is not None:
        if requested not in available:
            raise UserInputError(f"{where}.{role}_split", f"split {requested!r} not found (have {', '.join(available)})", "name an existing split")
        return requested
    return next((s for s in _SPLIT_ALIASES[role] if s in available), None)


def _text_columns(task: TaskConfig, columns, where: str) -> list[str]:
    if task.text_columns:
        for c in task.text_columns:
            if c not in columns:
                raise UserInputError(f"{where}.text_columns", f"column {c!r} not found (columns: {', '.join(columns)})", "set text_columns to existing columns")
        return list(task.text_columns)
    for guess in _TEXT_GUESSES:
        if all(c in columns for c in guess):
            return list(guess)
    raise UserInputError(f"{where}.text_columns", f"cannot guess the text columns among {', '.join(columns)}", "set text_columns")


def load_task(task: TaskConfig, where: str) -> TaskData:
    """Load and validate a task. `where` names its config section in error messages."""
    path = Path(task.source).expanduser()
    if synthetic.is_synthetic(task.source):
        raw, files = synthetic.load_raw(task.source, where), {}
    else:
        raw, files = _read_local(path, task, where) if path.exists() else (_read_hub(task, where), {})
    if task.train_split not in raw:
        raise UserInputError(f"{where}.source", f"no {task.train_split!r} split in {task.source} (have {', '.join(raw)})", "add a train file or set train_split")
    roles = {"train": task.train_split, "dev": _pick_split(raw, task.dev_split, "dev", where),
             "test": _pick_split(raw, task.test_split, "test", where)}
    if task.kind == "classification" and roles["dev"] is None:
        raise UserInputError(f"{where}.source", f"no dev split in {task.source} (have {', '.join(raw)})", "add a dev/validation file or set dev_split")
    columns = raw[task.train_split].column_names
    text_columns = ["text"] if task.kind == "mlm" and columns == ["text"] else _text_columns(task, columns, where)
    splits = {}
    for role, split in roles.items():
        if split is None:
            continue
        ds = raw[split]
        if len(ds) == 0:
            raise UserInputError(f"{where}.source", f"the {split!r} split of {task.source} is empty", "point to a file with examples")
        missing = [c for c in text_columns + ([task.label_column] if task.kind == "classification" else []) if c not in ds.column_names]
        if missing and role == "test" and missing == [task.label_column]:
            continue  # an unlabelled test split is simply not reported
        if missing:
            field = "label_column" if missing == [task.label_column] else "text_columns"
            raise UserInputError(f"{where}.{field}", f"column {missing[0]!r} missing in the {split!r} split (columns: {', '.join(ds.column_names)})", f"set {field} or fix the file")
        texts = list(zip(*(ds[c] for c in text_columns)))
        labels = list(ds[task.label_column]) if task.kind == "classification" else None
        if role == "test" and labels is not None and all(label == -1 for label in labels):
            continue  # GLUE-style unlabelled test split
        if labels is not None and split in files and any(not isinstance(x, int) or isinstance(x, bool) for x in labels):
            check_rows(files[split], where, task.label_column)  # an empty cell reads as text: say where it is
        splits[role] = {"texts": texts, "labels": labels}
    if task.heldout_test_size is not None and "test" not in splits and task.kind == "classification":
        splits["train"], splits["test"] = _hold_out(splits["train"], task.heldout_test_size, f"{where}.heldout_test_size")
    num_labels = _check_labels(task, splits, where) if task.kind == "classification" else None
    return TaskData(name=path.name if path.exists() else task.source, kind=task.kind, metric=task.metric, num_labels=num_labels, splits=splits)


def _hold_out(train: dict, size: int, where: str) -> tuple[dict, dict]:
    """Split `size` examples off the training set with a fixed seed, so every trial sees the same test set."""
    n = len(train["texts"])
    if size >= n:
        raise UserInputError(where, f"{size} is not smaller than the training split ({n} examples)", "hold out fewer examples")
    order = _seeded_order(n, seed=0)
    return _rows(train, sorted(order[size:])), _rows(train, sorted(order[:size]))


def _check_labels(task: TaskConfig, splits: dict, where: str) -> int:
    for role, split in splits.items():
        bad = next((label for label in split["labels"] if not isinstance(label, int) or isinstance(label, bool)), None)
        if bad is not None:
            raise UserInputError(f"{where}.label_column", f"label {bad!r} in the {role} split is not an integer", "map labels to 0..K-1")
    num_labels = task.num_labels or max(max(s["labels"]) for s in splits.values()) + 1
    for role, split in splits.items():
        low, high = min(split["labels"]), max(split["labels"])
        if low < 0 or high >= num_labels:
            raise UserInputError(f"{where}.label_column", f"labels in the {role} split span {low}..{high}, outside 0..{num_labels - 1}",
                                 "fix the labels or set num_labels")
    if num_labels < 2:
        raise UserInputError(f"{where}.label_column", "the training split has a single class", "use a task with at least two classes")
    seen = set(splits["train"]["labels"])
    for role, split in splits.items():
        unseen = sorted(set(split["labels"]) - seen)
        if unseen:
            raise UserInputError(f"{where}.label_column", f"label {unseen[0]} of the {role} split never occurs in the training split",
                                 "fix the labels (or the split files), so that every class has training examples")
    warn_if_too_many_classes(splits["train"]["labels"], num_labels, where)
    return num_labels


def warn_if_too_many_classes(labels: list[int], num_labels: int, where: str) -> str | None:
    """A label column that looks like an id (classes with one example, or more classes than half the examples) trains,
    but is most likely the wrong column: say so on stderr."""
    import sys
    from collections import Counter

    counts = Counter(labels)
    rare = sum(1 for c in counts.values() if c < 2)
    if not rare and num_labels <= len(labels) / 2:
        return None
    line = (f"raysearch: warning: {where}.label_column: {num_labels} classes for {len(labels)} training examples, "
            f"{rare} of them with fewer than 2 examples; is it an id column? (set label_column to the labels)")
    print(line, file=sys.stderr)
    return line


def subsample(split: dict, size: int | None, seed: int) -> dict:
    """A seeded random subset of `size` examples (limited-data target); order kept."""
    n = len(split["texts"])
    if size is None or size >= n:
        return split
    return _rows(split, sorted(_seeded_order(n, seed)[:size]))


def _seeded_order(n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def _rows(split: dict, indices: list[int]) -> dict:
    """The examples at `indices` of a split (texts, and labels when there are any)."""
    return {key: None if values is None else [values[i] for i in indices] for key, values in split.items()}
