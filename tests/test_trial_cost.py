"""What keeps a study trial cheap: the tokenisation cache, bounded evaluation, one thread per CPU."""
import numpy as np
import torch

from raysearch import data as data_lib
from raysearch.loop import run
from raysearch.trainer import JointTrainer

from .conftest import MemoryReporter, tiny_train_config


def _split(n=20):
    return {"texts": [(f"sentence number {i} about cats", f"and dogs {i}") for i in range(n)], "labels": [i % 2 for i in range(n)]}


def test_tokenised_split_is_cached_and_reused(tokenizer, tmp_path):
    split = _split()
    fresh = data_lib.encode(split, tokenizer, 16)
    cached = data_lib.encode(split, tokenizer, 16, tmp_path)
    files = list((tmp_path / "tokenized").glob("*.npz"))
    assert len(files) == 1
    again = data_lib.encode(split, tokenizer, 16, tmp_path)
    for got in (cached, again):
        assert got.input_ids == fresh.input_ids and got.token_type_ids == fresh.token_type_ids and got.labels == fresh.labels
    # the stored ids are what the second call returned (it did not tokenise again)
    stored = np.load(files[0])
    assert stored["input_ids"].tolist() == [t for ids in fresh.input_ids for t in ids]
    # another max length or other texts: another entry
    data_lib.encode(split, tokenizer, 12, tmp_path)
    data_lib.encode(_split(21), tokenizer, 16, tmp_path)
    assert len(list((tmp_path / "tokenized").glob("*.npz"))) == 3


def test_damaged_cache_entry_is_rebuilt(tokenizer, tmp_path):
    split = _split()
    fresh = data_lib.encode(split, tokenizer, 16, tmp_path)
    entry = next((tmp_path / "tokenized").glob("*.npz"))
    entry.write_bytes(b"truncated")
    assert data_lib.encode(split, tokenizer, 16, tmp_path).input_ids == fresh.input_ids
    assert np.load(entry)["lengths"].tolist() == [len(ids) for ids in fresh.input_ids]


def test_evaluation_splits_are_capped_with_the_same_rows_for_every_seed(pair_task):
    a = JointTrainer(tiny_train_config(pair_task, eval_max_examples=10, seed=0))
    b = JointTrainer(tiny_train_config(pair_task, eval_max_examples=10, seed=3))
    assert len(a.data.target_eval["dev"]) == 10
    assert a.data.target_eval["dev"].input_ids == b.data.target_eval["dev"].input_ids


def test_test_and_transfer_dev_are_evaluated_only_where_reported(pair_task, tmp_path):
    import shutil

    shutil.copy(pair_task / "dev.tsv", pair_task / "test.tsv")
    config = tiny_train_config(pair_task, max_steps=12, eval_every=2, pruning={"target_sparsity": 0.3, "warmup_steps": 4},
                               transfer={"task": {"source": str(pair_task)}, "preset": "multitask"})
    reporter = MemoryReporter(tmp_path)
    run(config, reporter)
    history = reporter.metrics
    assert all("target_dev" in m for m in history)
    assert [m["step"] for m in history if "transfer_dev" in m] == [12]  # the final evaluation only
    with_test = [m for m in history if "target_test" in m]
    assert with_test[-1]["step"] == 12
    for m in with_test[:-1]:  # every other test evaluation is a new best dev, whose test is reported beside it
        assert m["best_step"] == m["step"] and m["test_at_best_dev"] == m["target_test"]
    assert len(with_test) < len(history)
    # the dev-best is chosen at the final structure only: fine-tuning (steps 10-12 here), never a pruning-phase model
    assert all(m["best_step"] >= config.pruning_steps for m in history if "best_step" in m)
    assert [m["step"] for m in history if m.get("best_step") == m["step"]][0] == config.pruning_steps
    best = next(m for m in history if m["step"] == history[-1]["best_step"])
    assert best["exact_sparsity"] == history[-1]["exact_sparsity"]
    every = tiny_train_config(pair_task, max_steps=4, eval_every=2, pruning={"target_sparsity": 0.3, "warmup_steps": 2},
                              transfer={"task": {"source": str(pair_task)}, "preset": "multitask"}, transfer_dev_every_eval=True)
    reporter = MemoryReporter(tmp_path / "every")
    run(every, reporter)
    assert all("transfer_dev" in m for m in reporter.metrics)


def test_run_uses_the_threads_it_is_given(pair_task, tmp_path):
    before = torch.get_num_threads()
    try:
        run(tiny_train_config(pair_task, max_steps=1, eval_every=1, pruning={"warmup_steps": 1}), MemoryReporter(tmp_path), threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cache_key_ignores_the_tokenizers_truncation_state(tokenizer):
    before = data_lib.tokenizer_fingerprint(tokenizer)
    tokenizer(["a sentence"], truncation=True, max_length=7)  # sets the backend's truncation state
    assert data_lib.tokenizer_fingerprint(tokenizer) == before
