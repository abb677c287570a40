"""Task loading, limited-data subsampling, batching and metrics."""
import json
from collections import Counter

import pytest

from raysearch.config import TaskConfig
from raysearch.data import BatchStream
from raysearch.tasks import load_task, subsample
from raysearch.errors import UserInputError
from raysearch.metrics import accuracy, f1, mcc

from .conftest import SHARED_DATA, write_tsv


def test_metrics_against_hand_values():
    gold, pred = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    assert accuracy(pred, gold) == pytest.approx(0.6)
    assert f1(pred, gold) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # tp=2, fp=1, fn=1
    # MCC = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2*1 - 1*1) / sqrt(3*3*2*2)
    assert mcc(pred, gold) == pytest.approx(1 / 6)
    assert mcc([1, 1, 1], [1, 0, 1]) == 0.0  # undefined -> 0
    assert f1([0, 1, 2, 2], [0, 1, 2, 1]) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)  # macro over 3 classes


def test_real_rte_folder_loads_pairs_and_labels():
    task = load_task(TaskConfig(source=str(SHARED_DATA / "RTE")), "target")
    assert task.num_labels == 2 and len(task.splits["train"]["texts"]) == 2490 and len(task.splits["dev"]["texts"]) == 277
    assert len(task.splits["train"]["texts"][0]) == 2 and "test" not in task.splits


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_other_local_formats(tmp_path, suffix):
    rows = [("a fine film", 1), ("dull", 0), ("great", 1), ("bad", 0)]
    for split in ("train", "validation", "test"):
        path = tmp_path / f"{split}.{suffix}"
        if suffix == "csv":
            path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
        else:
            path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    task = load_task(TaskConfig(source=str(tmp_path), metric="f1"), "target")
    assert set(task.splits) == {"train", "dev", "test"} and task.splits["dev"]["labels"] == [1, 0, 1, 0]


def test_mlm_task_needs_no_labels(tmp_path):
    write_tsv(tmp_path / "train.tsv", ["sentence"], [("some unlabelled text",), ("more text",)])
    task = load_task(TaskConfig(source=str(tmp_path), kind="mlm"), "transfer.task")
    assert task.splits["train"]["labels"] is None


def test_subsample_is_seeded_and_sized():
    split = {"texts": [(str(i),) for i in range(100)], "labels": [i % 2 for i in range(100)]}
    a, b, c = subsample(split, 10, 0), subsample(split, 10, 0), subsample(split, 10, 1)
    assert a == b and a != c and len(a["texts"]) == 10
    assert subsample(split, None, 0) is split


def test_batch_stream_is_deterministic_and_shards_disjointly():
    ranks = [BatchStream(50, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for step in (0, 5, 6, 13):  # 6 batches per epoch: crosses epochs
        a, b = ranks[0].indices(step), ranks[1].indices(step)
        assert len(a) == len(b) == 4 and not set(a) & set(b)
        assert a == BatchStream(50, 4, seed=3, rank=0, world_size=2).indices(step)
    epoch = [i for step in range(6) for i in ranks[0].indices(step) + ranks[1].indices(step)]
    assert len(set(epoch)) == 48  # no repeats within an epoch


def test_heldout_test_split_is_carved_from_train_the_same_for_every_run():
    rte = str(SHARED_DATA / "RTE")
    first = load_task(TaskConfig(source=rte, heldout_test_size=200), "target")
    again = load_task(TaskConfig(source=rte, heldout_test_size=200), "target")
    full = load_task(TaskConfig(source=rte), "target")
    assert len(first.splits["test"]["texts"]) == 200 and first.splits["test"] == again.splits["test"]
    assert len(first.splits["train"]["texts"]) == len(full.splits["train"]["texts"]) - 200
    assert Counter(first.splits["test"]["texts"] + first.splits["train"]["texts"]) == Counter(full.splits["train"]["texts"])
    with pytest.raises(UserInputError, match=r"target.heldout_test_size: 5000 is not smaller"):
        load_task(TaskConfig(source=rte, heldout_test_size=5000), "target")
