"""A trial's data: the limited target subset, tokenisation (cached on disk), and batches.

Tasks are loaded and checked in raysearch.tasks. Batches come from a deterministic stream: the batch at global step
s depends only on (seed, s, rank, world size), so the data position of a checkpoint is its step.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserInputError
from .tasks import TaskData, subsample

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
