"""The built-in synthetic pair: deterministic, offline, and a pair where transfer matters."""
import pytest

from raysearch.config import TaskConfig, config_from_dict
from raysearch.tasks import load_task
from raysearch.errors import UserInputError
from raysearch.loop import run
from raysearch.synthetic import generate
from search_spaces import load_space

from .conftest import MemoryReporter


def test_same_seed_same_world_other_seed_other_world():
    assert generate("target", 0) == generate("target", 0)
    assert generate("target", 0)["train"]["sentence"] != generate("target", 1)["train"]["sentence"]


def test_tasks_load_through_the_normal_validation():
    target = load_task(TaskConfig(source="synthetic:target"), "target")
    transfer = load_task(TaskConfig(source="synthetic:transfer:3"), "transfer.task")
    assert {k: len(v["texts"]) for k, v in target.splits.items()} == {"train": 200, "dev": 500, "test": 1000}
    assert target.num_labels == 2 and transfer.num_labels == 8 and len(transfer.splits["train"]["texts"]) == 20000
    assert 0.3 < sum(target.splits["dev"]["labels"]) / 500 < 0.7  # both classes well represented


@pytest.mark.parametrize("source", ["synthetic:tragets", "synthetic:target:x", "synthetic:target:1:2"])
def test_unknown_synthetic_source_is_named(source):
    with pytest.raises(UserInputError, match=rf"target.source: unknown synthetic task '{source}'"):
        load_task(TaskConfig(source=source), "target")


def _demo_config(preset: str, steps: int):
    base = load_space("demo").base
    overrides = [f"transfer.preset={preset}", f"max_steps={steps}", f"eval_every={steps}", f"pruning.warmup_steps={steps // 2}",
                 f"pruning.finetune_steps={steps // 4}"]
    return config_from_dict(base, overrides)


def test_transfer_matters_on_the_builtin_pair(tmp_path):
    """The embedded default's point: sharing the transfer task's parameters lifts the data-poor target."""
    quality = {}
    for preset in ("no_transfer", "multitask"):
        final = run(_demo_config(preset, 200), MemoryReporter(tmp_path / preset))
        quality[preset] = final["target_dev"]
    assert quality["multitask"] > quality["no_transfer"] + 0.08, quality
