"""What a trial reports, and where the loop sends it.

The names of what one evaluation reports live here (the analysis' frames, `raysearch status` and the export read
them from here). The loop only knows the `Reporter` interface; `raysearch train` uses raysearch.run_folder.LocalReporter,
the Ray Train glue plugs in its own (ray.train.report) without the loop changing. Every rank reports through
`report_collectively`, as often as rank 0.
"""
from pathlib import Path
from typing import Protocol


class Reporter(Protocol):
    keeps_checkpoints_alone: bool  # a checkpoint may be reported with metrics None (Ray Tune's results may not)

    def checkpoint_dir(self, step: int) -> Path:
        """An empty directory for the checkpoint of `step`."""

    def report(self, metrics: dict | None, checkpoint: Path | None) -> None:
        """Record one evaluation (and the checkpoint written for it, if any); metrics None: a checkpoint alone."""


def report_collectively(reporter: Reporter, rank: int, metrics=None, checkpoint=None) -> dict | None:
    """Rank 0's metrics and checkpoint (each a callable, run on rank 0 only); the other ranks report None as often as
    rank 0 does (Ray Train's report is collective: a rank that reports once less hangs the trial)."""
    metrics = metrics() if rank == 0 and metrics is not None else None
    reporter.report(metrics, checkpoint() if rank == 0 and checkpoint is not None else None)
    return metrics


# what one evaluation reports (the history's columns and a trial's final values), raysearch.trainer.JointTrainer.evaluate
METRICS = ("step", "phase", "target_dev", "target_test", "transfer_dev", "exact_sparsity", "expected_sparsity",
           "remaining_params", "full_params", "train_loss", "lambda_1", "lambda_2", "wall_time", "sparsity_off_target",
           "latency_ms")
BEST = ("best_target_dev", "best_step", "test_at_best_dev")  # the dev-selected evaluation so far
# also in an evaluation where they apply: the target's metric name, the teacher's dev, the step a restarted worker
# continued from (the search prints it)
RESUMED_FROM = "resumed_from_step"
NOTES = ("target_metric", "teacher_dev", RESUMED_FROM)
# the final report adds the exported model (raysearch.loop.export_target): where it is, its sizes, its check against
# the masked model
EXPORT_DIR = "export_dir"
EXPORT = (EXPORT_DIR, "export_parameters", "export_prunable_parameters", "export_size_bytes", "export_dev_agreement",
          "export_max_logit_diff", "export_stock_class")

# one printed format per quantity, wherever raysearch prints it (progress lines, status, the front)
FORMATS = {"remaining_params": "{:,.0f}", "full_params": "{:,.0f}", "exact_sparsity": "{:.3f}", "expected_sparsity": "{:.3f}",
           "latency_ms": "{:.2f} ms", "step": "{:.0f}"}


def shown(name: str, value) -> str:
    """A metric as raysearch prints it: counts with thousands separators, sparsity to 3 places, other qualities to 4."""
    if value is None or value != value:
        return "-"
    return FORMATS.get(name, "{:.4f}").format(value)

