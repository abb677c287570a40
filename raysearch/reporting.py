"""Where the loop sends metrics and checkpoints.

The loop only knows this small interface; the local CLI uses `LocalReporter`, the Ray
Train glue plugs in its own (ray.train.report) without the loop changing.
"""
import json
import shutil
from pathlib import Path
from typing import Protocol


class Reporter(Protocol):
    keeps_checkpoints_alone: bool  # a checkpoint may be reported with metrics None (Ray Tune's results may not)

    def checkpoint_dir(self, step: int) -> Path:
        """An empty directory for the checkpoint of `step`."""

    def report(self, metrics: dict | None, checkpoint: Path | None) -> None:
        """Record one evaluation (and the checkpoint written for it, if any); metrics None: a checkpoint alone."""


class LocalReporter:
    """Appends metrics to OUT/metrics.jsonl; checkpoints in OUT/checkpoints/step_NNNNNN.

    Keeps the newest `keep_checkpoints` checkpoints of this run (older ones of the same
    run are removed as new ones land; nothing outside OUT/checkpoints is touched).
    """

    keeps_checkpoints_alone = True

    def __init__(self, output_dir: str | Path, keep_checkpoints: int = 2):
        self.output_dir = Path(output_dir)
        self.keep = keep_checkpoints
        (self.output_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.output_dir / "metrics.jsonl"
        self.last_metrics: dict = {}  # the latest evaluation (the progress bar shows its dev)

    def checkpoint_dir(self, step: int) -> Path:
        path = self.output_dir / "checkpoints" / f"step_{step:06d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def report(self, metrics: dict | None, checkpoint: Path | None) -> None:
        if metrics is not None:
            self.last_metrics = metrics
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(metrics) + "\n")
        if checkpoint is not None:
            existing = checkpoints_in(self.output_dir)
            for old in existing[: max(0, len(existing) - self.keep)]:
                shutil.rmtree(old)


def checkpoints_in(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a local run, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / "checkpoint.pt").is_file())


def read_metrics(output_dir: str | Path) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


# one printed format per quantity, wherever raysearch prints it (progress lines, status, the front)
FORMATS = {"remaining_params": "{:,.0f}", "full_params": "{:,.0f}", "exact_sparsity": "{:.3f}", "expected_sparsity": "{:.3f}",
           "latency_ms": "{:.2f} ms", "step": "{:.0f}"}


def shown(name: str, value) -> str:
    """A metric as raysearch prints it: counts with thousands separators, sparsity to 3 places, other qualities to 4."""
    if value is None or value != value:
        return "-"
    return FORMATS.get(name, "{:.4f}").format(value)

