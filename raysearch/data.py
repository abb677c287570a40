"""Tasks: loading (local files or `datasets` names), validation, tokenisation, batching.

Everything that can be wrong with the data is checked in `load_task`, before any model is
built. Batches come from a deterministic stream: the batch at global step s depends only
on (seed, s, rank, world size), so the data position of a checkpoint is its step.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import TaskConfig
from . import synthetic
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


# ------------------------------------------------------------------ tokenised splits and batches


@dataclass
class EncodedSplit:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[int] | None

    def __len__(self):
        return len(self.input_ids)


def encode(split: dict, tokenizer, max_length: int, cache_dir: str | Path | None = None) -> EncodedSplit:
    """Tokenise a split; with `cache_dir`, reuse the ids another run stored for the same texts, tokenizer
    and max length (a study tokenises its transfer task once, not once per trial)."""
    if cache_dir is None:
        return _encode(split, tokenizer, max_length)
    path = Path(cache_dir) / "tokenized" / f"{_encoding_key(split, tokenizer, max_length)}.npz"
    if path.is_file():
        try:
            return _load_encoded(path, split["labels"])
        except (OSError, ValueError, KeyError, EOFError):
            pass  # a damaged entry (e.g. a full disk) is rebuilt below
    encoded = _encode(split, tokenizer, max_length)
    try:
        _save_encoded(encoded, path)
    except OSError:
        pass  # the cache is an optimisation: an unwritable cache folder must not fail the run
    return encoded


def _encode(split: dict, tokenizer, max_length: int) -> EncodedSplit:
    columns = list(zip(*split["texts"]))
    enc = tokenizer(*columns, truncation=True, max_length=max_length)
    return EncodedSplit(enc["input_ids"], enc.get("token_type_ids"), split["labels"])


def tokenizer_fingerprint(tokenizer) -> str:
    """What decides a tokenizer's output: its class, its full serialisation (fast tokenizers) or vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # the serialisation also holds the truncation/padding state of the last call: not part of what it is
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        body = json.dumps(spec, sort_keys=True)
    else:
        body = repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}\x00{body}".encode()).hexdigest()


def texts_digest(texts) -> str:
    digest = hashlib.sha256()
    for example in texts:
        digest.update("\x1f".join(example).encode())
        digest.update(b"\x1e")
    return digest.hexdigest()


def _encoding_key(split: dict, tokenizer, max_length: int) -> str:
    parts = (texts_digest(split["texts"]), tokenizer_fingerprint(tokenizer), str(max_length), str(_CACHE_FORMAT))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


_CACHE_FORMAT = 1


def _save_encoded(encoded: EncodedSplit, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(ids) for ids in encoded.input_ids], dtype=np.int64)
    arrays = {"lengths": lengths, "input_ids": np.fromiter((t for ids in encoded.input_ids for t in ids), dtype=np.int32, count=int(lengths.sum()))}
    if encoded.token_type_ids is not None:
        arrays["token_type_ids"] = np.fromiter((t for ids in encoded.token_type_ids for t in ids), dtype=np.int8, count=int(lengths.sum()))
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # one writer per process; the rename is atomic
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _load_encoded(path: Path, labels) -> EncodedSplit:
    with np.load(path, allow_pickle=False) as stored:
        bounds = np.concatenate([[0], np.cumsum(stored["lengths"])]).tolist()
        ids = stored["input_ids"].tolist()
        types = stored["token_type_ids"].tolist() if "token_type_ids" in stored.files else None
    split = lambda flat: [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]  # noqa: E731
    return EncodedSplit(split(ids), split(types) if types is not None else None, labels)


def collate(data: EncodedSplit, indices, tokenizer, device, pad_to: int | None = None) -> dict:
    """The examples `indices` as one batch of tensors, padded by the tokenizer to the longest (or to `pad_to`)."""
    features = {"input_ids": [data.input_ids[i] for i in indices]}
    if data.token_type_ids is not None:
        features["token_type_ids"] = [data.token_type_ids[i] for i in indices]
    padding = {"padding": "max_length", "max_length": pad_to} if pad_to else {"padding": "longest"}
    batch = dict(tokenizer.pad(features, return_tensors="pt", **padding))
    batch.setdefault("token_type_ids", None)  # RoBERTa has none
    if data.labels is not None:
        batch["labels"] = torch.tensor([data.labels[i] for i in indices], dtype=torch.long)
    return {k: (v.to(device) if v is not None else None) for k, v in batch.items()}


def length_sorted_batches(data: EncodedSplit, batch_size: int) -> list[list[int]]:
    """Evaluation batches of examples of similar length: little padding, so less compute per example
    (measured on SST-2 dev: see docs/PERFORMANCE.md). Predictions and labels come out in this order together."""
    order = sorted(range(len(data)), key=lambda i: len(data.input_ids[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class BatchStream:
    """Deterministic, resumable stream of training batches (reshuffled every epoch).

    Each of `world_size` ranks takes its own slice of every global batch (DDP sharding).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world_size = n, batch_size, seed, rank, world_size
        global_batch = batch_size * world_size
        if n < global_batch:
            raise UserInputError("batch_size", f"{global_batch} examples per step exceed the {n} training examples", "lower batch_size or add data")
        self.batches_per_epoch = n // global_batch
        self._epoch, self._order = None, None

    def indices(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.n, generator=generator).tolist()
        start = (position * self.world_size + self.rank) * self.batch_size
        return self._order[start : start + self.batch_size]


class TrialData:
    """A trial's data, tokenised: the limited target training set, the evaluation splits (capped at
    `eval_max_examples`, the same rows for every trial and seed, so qualities compare) and one seeded batch
    stream per task, so that the batch of a step depends only on the seed and the step."""

    def __init__(self, config, target: TaskData, transfer: TaskData | None, tokenizer, rank: int = 0, world_size: int = 1):
        self.config, self.tokenizer, self.rank, self.world_size = config, tokenizer, rank, world_size
        max_len, cache = config.model.max_seq_length, config.resolved_cache_dir
        self.pad_to = max_len if config.model.pad_to_max_length else None
        self.target_metric = target.metric
        self.target_train_split = subsample(target.splits["train"], config.target_train_size, config.seed)
        self.target_train = encode(self.target_train_split, tokenizer, max_len, cache)
        capped = lambda split: subsample(split, config.eval_max_examples, seed=0)  # noqa: E731
        self.target_eval = {role: encode(capped(target.splits[role]), tokenizer, max_len, cache)
                            for role in ("dev", "test") if target.has(role)}
        self.target_stream = BatchStream(len(self.target_train), config.batch_size, config.seed, rank, world_size)
        self.transfer_kind = transfer.kind if transfer else None
        self.transfer_dev = None
        if transfer is not None:
            self.transfer_metric = transfer.metric if transfer.kind == "classification" else "accuracy"
            self.transfer_train = encode(transfer.splits["train"], tokenizer, max_len, cache)
            dev = transfer.splits.get("dev")
            self.transfer_dev = encode(capped(dev), tokenizer, max_len, cache) if dev else None
            self.transfer_stream = BatchStream(len(self.transfer_train), config.transfer.batch_size or config.batch_size,
                                               config.seed + 1, rank, world_size)

    def target_batch(self, step: int, device) -> dict:
        return collate(self.target_train, self.target_stream.indices(step), self.tokenizer, device, self.pad_to)

    def transfer_batch(self, step: int, device) -> dict:
        batch = collate(self.transfer_train, self.transfer_stream.indices(step), self.tokenizer, device, self.pad_to)
        if self.transfer_kind == "mlm":
            batch = mask_for_mlm(batch, self.tokenizer, self.config.seed * self.world_size + self.rank, step)
        return batch

    def eval_batches(self, split: EncodedSplit, device, mlm_seed: int | None = None):
        """Length-sorted batches of an evaluation split; with `mlm_seed`, masked as the MLM task is."""
        for number, indices in enumerate(length_sorted_batches(split, self.config.eval_batch_size)):
            batch = collate(split, indices, self.tokenizer, device)
            yield mask_for_mlm(batch, self.tokenizer, mlm_seed, number) if mlm_seed is not None else batch


def mask_for_mlm(batch: dict, tokenizer, seed: int, step: int, probability: float = 0.15) -> dict:
    """BERT masking (80% [MASK], 10% random, 10% kept), seeded by the step so resume replays it."""
    generator = torch.Generator().manual_seed(seed * 7_919 + step)
    ids = batch["input_ids"].cpu()
    special = torch.zeros_like(ids, dtype=torch.bool)
    for token_id in tokenizer.all_special_ids:
        special |= ids == token_id
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & ~special
    if not chosen.any():  # never an empty loss
        first = (~special).nonzero()[0]
        chosen[first[0], first[1]] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    masked = ids.clone()
    masked[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    random_tokens = torch.randint(len(tokenizer), ids.shape, generator=generator)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[swap] = random_tokens[swap]
    device = batch["input_ids"].device
    return {**batch, "input_ids": masked.to(device), "labels": labels.to(device)}
