"""Checkpoints hold the full state: a resumed run continues exactly where it stopped."""
import pytest
import torch

from raysearch.loop import run
from raysearch.checkpoints import read_checkpoint

from .conftest import MemoryReporter, tiny_train_config


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("transfer", [
    {"coupling": "tied", "groups": ["attention", "masks"], "transfer_start_step": 4},  # crosses the start step after resume
    {"coupling": "soft", "groups": ["ffn"], "coupling_strength": 0.1, "task_kind": "mlm"},
])
def test_resume_gives_same_losses_as_uninterrupted_run(pair_task, tmp_path, transfer):
    transfer = dict(transfer)
    task = {"source": str(pair_task), "kind": transfer.pop("task_kind", "classification")}
    config = tiny_train_config(pair_task, max_steps=8, eval_every=3, pruning={"target_sparsity": 0.3, "warmup_steps": 4, "finetune_steps": 2},
                               transfer={"task": task, **transfer})

    def recorder(losses, stop_at=None):
        def progress(step, metrics):
            if step == stop_at:
                raise Interrupt()
            losses[step] = metrics["loss"]
        return progress

    full = {}
    run(config, MemoryReporter(tmp_path / "a"), progress=recorder(full))

    partial = {}
    reporter = MemoryReporter(tmp_path / "b")
    with pytest.raises(Interrupt):
        run(config, reporter, progress=recorder(partial, stop_at=5))  # dies during step 5, after the step-3 checkpoint
    assert [c.name for c in reporter.checkpoints] == ["step_000003"]
    assert read_checkpoint(reporter.checkpoints[-1])["step"] == 3

    resumed = {}
    final = run(config, MemoryReporter(tmp_path / "c"), resume_from=reporter.checkpoints[-1], progress=recorder(resumed))
    assert sorted(resumed) == [4, 5, 6, 7, 8]  # continues at the right step
    for step in resumed:
        assert resumed[step] == pytest.approx(full[step], abs=1e-6), step
    assert final["step"] == 8


def test_checkpoint_loads_with_weights_only(pair_task, tmp_path):
    config = tiny_train_config(pair_task, max_steps=2, eval_every=2, pruning={"warmup_steps": 2})
    reporter = MemoryReporter(tmp_path)
    run(config, reporter)
    state = torch.load(reporter.checkpoints[-1] / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizers", "scheduler", "rng", "step", "frozen_z", "config"} <= set(state)
    assert state["step"] == 2


def test_a_run_stopped_during_its_final_evaluation_resumes_with_no_step_to_train(pair_task, tmp_path, monkeypatch):
    """The last step's checkpoint is written before the final evaluation: a run killed there loses no training."""
    from raysearch.trainer import JointTrainer

    config = tiny_train_config(pair_task, max_steps=8, eval_every=4, pruning={"target_sparsity": 0.3, "warmup_steps": 4})
    uninterrupted = run(config, MemoryReporter(tmp_path / "a"))

    evaluate = JointTrainer.evaluate

    def dies_in_final_evaluation(self, final=False):
        if final:
            raise Interrupt()
        return evaluate(self, final)

    reporter = MemoryReporter(tmp_path / "b")
    monkeypatch.setattr(JointTrainer, "evaluate", dies_in_final_evaluation)
    with pytest.raises(Interrupt):
        run(config, reporter)
    monkeypatch.setattr(JointTrainer, "evaluate", evaluate)
    assert read_checkpoint(reporter.checkpoints[-1])["step"] == 8

    steps_trained = []
    resumed_reporter = MemoryReporter(tmp_path / "c")
    final = run(config, resumed_reporter, resume_from=reporter.checkpoints[-1], progress=lambda step, m: steps_trained.append(step))
    assert steps_trained == []  # nothing left to train
    assert [m["step"] for m in resumed_reporter.metrics] == [8]  # the final evaluation is reported
    for key in ("target_dev", "exact_sparsity", "train_loss", "best_target_dev"):
        assert final[key] == pytest.approx(uninterrupted[key], abs=1e-6), key
