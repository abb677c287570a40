"""Shared fixtures: tiny real BERT/RoBERTa encoders and small real task data."""
import copy
import os
import secrets

# Ray 2.60 clusters use token auth; Ray reads these when it is imported, so they are set before any
# test module imports it. A per-session token keeps the tests away from the user's ~/.ray.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
# the tests' tokenisation and teacher caches stay out of the user's ~/.cache (Ray workers inherit this)
import tempfile  # noqa: E402

os.environ["RAYSEARCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="raysearch-test-cache-")
from pathlib import Path

import datasets
import pytest
import torch

from raysearch.config import ModelConfig, config_from_dict
from raysearch.models import load_backbone, load_tokenizer

datasets.disable_progress_bars()

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ARCHITECTURES = ("bert", "roberta")
TINY = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64}


@pytest.fixture
def kill_worker_after(monkeypatch):
    """`kill_worker_after(step)`: in the local Ray that the test starts next (its processes inherit this environment),
    a run's last rank SIGKILLs itself after `step` on its first attempt (raysearch.loop's testing hook)."""
    from raysearch.loop import KILL_AFTER_STEP_ENV

    return lambda step: monkeypatch.setenv(KILL_AFTER_STEP_ENV, str(step))


def tiny_model_config(architecture: str = "bert", **overrides) -> dict:
    return {"tiny": {"architecture": architecture, **TINY, **overrides}, "max_seq_length": 48}


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer(ModelConfig(tiny={"architecture": "bert"}))


@pytest.fixture(params=ARCHITECTURES)
def tiny_backbone(request, tokenizer):
    torch.manual_seed(0)
    return load_backbone(ModelConfig(**tiny_model_config(request.param)), tokenizer).eval()


def write_tsv(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


@pytest.fixture
def pair_task(tmp_path):
    """A small real-text pair-classification task (rows of RTE) as a local folder."""
    folder = tmp_path / "rte_small"
    lines = (SHARED_DATA / "RTE" / "train.tsv").read_text().splitlines()
    header, rows = lines[0].split("\t"), [line.split("\t") for line in lines[1:161]]
    write_tsv(folder / "train.tsv", header, rows[:128])
    write_tsv(folder / "dev.tsv", header, rows[128:])
    return folder


def tiny_train_config(target: Path, architecture="bert", **overrides) -> "TrainConfig":  # noqa: F821
    data = {
        "model": tiny_model_config(architecture),
        "target": {"source": str(target)},
        "max_steps": 8, "batch_size": 8, "eval_every": 4, "learning_rate": 1e-3,
        "pruning": {"target_sparsity": 0.3, "warmup_steps": 4},
    }
    for key, value in overrides.items():
        node = data
        *path, leaf = key.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = copy.deepcopy(value)
    return config_from_dict(data)


class MemoryReporter:
    """Collects metrics in memory; checkpoints in a temporary folder."""

    keeps_checkpoints_alone = True

    def __init__(self, root: Path):
        self.root, self.metrics, self.checkpoints = Path(root), [], []

    def checkpoint_dir(self, step):
        path = self.root / f"step_{step:06d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def report(self, metrics, checkpoint):
        if metrics is not None:  # None: a checkpoint alone (the last step's, before its final evaluation)
            self.metrics.append(metrics)
        if checkpoint is not None:
            self.checkpoints.append(checkpoint)
