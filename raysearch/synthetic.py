"""The built-in synthetic target/transfer pair behind the embedded default (`raysearch launch`).

Nothing is downloaded: both tasks are generated from a seed, in memory, wherever a task is loaded.

The latent structure: a vocabulary of real word-piece tokens is split at random into topics. A
sentence has a dominant topic (half of its words) and noise words from the other topics.
- transfer (data-rich, 20,000 sentences): name the dominant topic (8 classes). Learning it means
  learning which words belong to which topic.
- target (data-poor, 200 training sentences): is the dominant topic one of a fixed half of the
  topics (2 classes)? With each word seen about once in its training set, the target alone cannot
  learn the words' topics; a model that shares what the transfer task learned (above all the
  embeddings) can. That is the situation raysearch is for, small enough to search in minutes.

Use it with `source: synthetic:target` / `synthetic:transfer`, or `synthetic:ROLE:SEED` for another
world (the seed draws the topics, the words and the target's topic subset).
"""
import random
from dataclasses import dataclass
from pathlib import Path

from .errors import UserInputError

PREFIX = "synthetic:"
# noise: the transfer sentences with labels drawn at random, a transfer task that carries nothing about the target
# (a pair where transfer cannot help; the known-truth tests of the pick use it)
ROLES = ("target", "transfer", "noise")


@dataclass(frozen=True)
class TopicWorld:
    seed: int = 0
    n_topics: int = 8
    words_per_topic: int = 250
    length: int = 16
    dominant_share: float = 0.5
    sizes: tuple = (("target", {"train": 200, "dev": 500, "test": 1000}),
                    ("transfer", {"train": 20000, "dev": 1000}))

    def split_sizes(self, role: str) -> dict:
        return dict(self.sizes)["transfer" if role == "noise" else role]


def is_synthetic(source: str) -> bool:
    return source.startswith(PREFIX)


def parse_source(source: str, where: str) -> tuple[str, int]:
    """`synthetic:ROLE[:SEED]` -> (role, seed)."""
    parts = source[len(PREFIX):].split(":")
    role = parts[0]
    if role not in ROLES or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise UserInputError(f"{where}.source", f"unknown synthetic task {source!r}", "use synthetic:target, synthetic:transfer or synthetic:noise, optionally :SEED")
    return role, int(parts[1]) if len(parts) == 2 else 0


def _vocabulary() -> list[str]:
    """Whole-word tokens of the packaged MiniLM vocabulary (each is one token for its tokenizer)."""
    from .models import packaged_minilm_path

    words = (Path(packaged_minilm_path()) / "vocab.txt").read_text().split("\n")
    return sorted({w for w in words if w.isalpha() and w.isascii() and w.islower() and 3 <= len(w) <= 9})


def generate(role: str, seed: int = 0, world: TopicWorld | None = None) -> dict:
    """Splits of one task: split -> {"sentence": [...], "label": [...]}; the same seed gives the same world."""
    world = world or TopicWorld(seed=seed)
    rng = random.Random(seed)
    vocab = _vocabulary()
    words = rng.sample(vocab, world.n_topics * world.words_per_topic)
    topics = [words[t * world.words_per_topic:(t + 1) * world.words_per_topic] for t in range(world.n_topics)]
    positive = set(rng.sample(range(world.n_topics), world.n_topics // 2))  # the target's topic subset
    n_dominant = round(world.length * world.dominant_share)

    def sentence(r: random.Random) -> tuple[str, int]:
        topic = r.randrange(world.n_topics)
        tokens = [r.choice(topics[topic]) for _ in range(n_dominant)]
        others = [t for t in range(world.n_topics) if t != topic]
        tokens += [r.choice(topics[r.choice(others)]) for _ in range(world.length - n_dominant)]
        r.shuffle(tokens)
        return " ".join(tokens), topic

    splits = {}
    for split, size in world.split_sizes(role).items():
        r = random.Random(f"{seed}/{'transfer' if role == 'noise' else role}/{split}")  # each split its own stream: sizes can change independently
        rows = [sentence(r) for _ in range(size)]
        labels = [topic if role == "transfer" else int(topic in positive) for _, topic in rows]
        if role == "noise":
            labels = [r.randrange(world.n_topics) for _ in rows]
        splits[split] = {"sentence": [s for s, _ in rows], "label": labels}
    return splits


class Columns:
    """A split as a `datasets.Dataset` shows itself to the loader (column names, length, a column by name), so that the
    demo's data goes through the same validation without importing `datasets` (most of a demo trial's start-up)."""

    def __init__(self, columns: dict):
        self.columns = columns

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def __getitem__(self, name: str) -> list:
        return self.columns[name]


def load_raw(source: str, where: str) -> dict:
    """The task's splits, validated by raysearch.tasks.load_task like any other data."""
    role, seed = parse_source(source, where)
    return {split: Columns(columns) for split, columns in generate(role, seed).items()}
