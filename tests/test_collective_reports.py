"""Ray Train's report is collective: every rank of a trial must report exactly as often as rank 0, or the trial never
ends (a 2-worker trial trained, exported, then hung). Checked here without Ray, on the loop itself."""
import pandas as pd
import pytest

from raysearch.loop import run

from .conftest import MemoryReporter, tiny_train_config


class CountingReporter(MemoryReporter):
    """Counts every report, metrics or not, the way Ray Train's controller does (a Tune result needs metrics, so
    checkpoints go with metrics, as under Ray)."""

    keeps_checkpoints_alone = False

    def __init__(self, root):
        super().__init__(root)
        self.calls = 0

    def report(self, metrics, checkpoint):
        self.calls += 1
        super().report(metrics, checkpoint)


@pytest.mark.parametrize("resume_at", [None, 4, 8])  # a fresh run, a resume mid-run, a resume from the last step
def test_every_rank_reports_as_often_as_rank_0(pair_task, tmp_path, resume_at):
    config = tiny_train_config(pair_task, max_steps=8, eval_every=4, pruning={"target_sparsity": 0.3, "warmup_steps": 4, "finetune_steps": 2})
    resume_from = None
    if resume_at is not None:
        first = CountingReporter(tmp_path / "first")
        run(config, first, rank=0, world_size=2)
        resume_from = next(c for c in first.checkpoints if c.name == f"step_{resume_at:06d}")
    calls = {}
    for rank in (0, 1):  # no process group: each rank trains its own shard alone, which is all the count depends on
        reporter = CountingReporter(tmp_path / f"rank{rank}")
        run(config, reporter, resume_from=resume_from, rank=rank, world_size=2)
        calls[rank] = reporter.calls
    assert calls[1] == calls[0] == (2 if resume_at is None else 1 if resume_at == 4 else 1)


def test_a_quantity_is_printed_in_one_format_wherever_it_is_printed(capsys):
    from types import SimpleNamespace

    from raysearch.distributed.callbacks import FrontProgress
    from raysearch.distributed.status import format_table
    from raysearch.reporting import shown
    from search_spaces import load_space

    assert [shown("remaining_params", 56470.0), shown("target_dev", 0.53125), shown("exact_sparsity", 0.6004), shown("latency_ms", 3.14159)] \
        == ["56,470", "0.5312", "0.600", "3.14 ms"]
    progress = FrontProgress(load_space("demo"), total=2)
    trial = SimpleNamespace(trial_id="t1", status="RUNNING", last_result={})
    progress.on_trial_result(0, [trial], trial, {"step": 10, "phase": "pruning", "target_dev": 0.53125, "remaining_params": 56470.0})
    trial.status, trial.last_result = "TERMINATED", {"target_dev": 0.53125, "remaining_params": 9748.0}
    progress.on_trial_complete(0, [trial], trial)
    out = capsys.readouterr().out
    assert "target_dev 0.5312, remaining_params 56,470" in out and "front (target_dev, remaining_params): (0.5312, 9,748)" in out
    table = format_table(pd.DataFrame({"trial_id": ["t1"], "status": ["TERMINATED"], "step": [20.0], "target_dev": [0.53125],
                                       "exact_sparsity": [0.6], "remaining_params": [49688.0]}))
    assert "49,688" in table and "0.5312" in table


def test_every_reported_name_is_named_in_reporting(pair_task, tmp_path):
    """raysearch.reporting owns the names of what a trial reports (the frames, status and export read them there): a
    metric the loop reports but reporting does not name fails here, on a run with a resume, latency and the export."""
    from raysearch.reporting import BEST, EXPORT, METRICS, NOTES

    config = tiny_train_config(pair_task, max_steps=8, eval_every=4, latency={"enabled": True, "repeats": 1, "warmup": 0},
                               pruning={"target_sparsity": 0.3, "warmup_steps": 4, "finetune_steps": 2})
    first = MemoryReporter(tmp_path / "first")
    run(config, first)
    again = MemoryReporter(tmp_path / "again")
    final = run(config, again, resume_from=first.checkpoints[0], export_dir=tmp_path / "model")
    reported = set().union(*(m.keys() for m in first.metrics + again.metrics if m is not None), final.keys())
    unnamed = reported - set(METRICS + BEST + EXPORT + NOTES)
    assert not unnamed, f"reported but not named in raysearch.reporting: {sorted(unnamed)}"
    assert {"latency_ms", "resumed_from_step", "export_dir"} <= reported  # the run reached every kind of name
