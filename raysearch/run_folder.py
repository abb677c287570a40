"""The folder of one `raysearch train` run: its layout, its reporter, and the checks before a run writes into it.

    raysearch_run.json   the marker, written first: the folder is raysearch's from then on
    config.yaml          the validated config the run started with (config_changes.jsonl: what a resume changed)
    metrics.jsonl        one line per evaluation (LocalReporter)
    checkpoints/         step_NNNNNN/checkpoint.pt (raysearch.checkpoints)
    model/               the exported pruned model (raysearch.exported), with its card README.md
    final_metrics.json   the final evaluation and the export check
"""
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

from .errors import UserInputError

RUN_MARKER = "raysearch_run.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
MODEL_DIR = "model"
FINAL_METRICS = "final_metrics.json"
CHANGES_FILE = "config_changes.jsonl"
RUN_OUTPUTS = (METRICS_FILE, CHECKPOINTS_DIR, MODEL_DIR, FINAL_METRICS)  # what runs from before the marker hold
# settings that decide the shapes in a checkpoint: a resume cannot change them
SHAPE_SETTINGS = ("model.", "pruning.structures", "transfer.coupling", "transfer.groups", "transfer.preset", "transfer.task.",
                  "target.num_labels", "distill.enabled")


def is_run_folder(path: Path) -> bool:
    """A folder raysearch made for a run (the marker; runs from before it have their outputs)."""
    path = Path(path)
    return (path / RUN_MARKER).is_file() or any((path / name).exists() for name in RUN_OUTPUTS)


def run_config(path: Path):
    """The TrainConfig the run started with."""
    from .config import config_from_dict

    return config_from_dict(yaml.safe_load((Path(path) / CONFIG_FILE).read_text()))


def final_metrics(path: Path) -> dict:
    file = Path(path) / FINAL_METRICS
    return json.loads(file.read_text()) if file.is_file() else {}


def checkpoints_in(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a local run, oldest first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / "checkpoint.pt").is_file())


def read_metrics(output_dir: str | Path) -> list[dict]:
    path = Path(output_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class LocalReporter:
    """Appends metrics to OUT/metrics.jsonl; checkpoints in OUT/checkpoints/step_NNNNNN.

    Keeps the newest `keep_checkpoints` checkpoints of this run (older ones of the same
    run are removed as new ones land; nothing outside OUT/checkpoints is touched).
    """

    keeps_checkpoints_alone = True

    def __init__(self, output_dir: str | Path, keep_checkpoints: int = 2):
        self.output_dir = Path(output_dir)
        self.keep = keep_checkpoints
        (self.output_dir / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.output_dir / METRICS_FILE
        self.last_metrics: dict = {}  # the latest evaluation (the progress bar shows its dev)

    def checkpoint_dir(self, step: int) -> Path:
        path = self.output_dir / CHECKPOINTS_DIR / f"step_{step:06d}"
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


def finished_or_checkpointed(path: Path) -> bool:
    return bool(checkpoints_in(path)) or (path / MODEL_DIR).exists() or (path / FINAL_METRICS).exists()


def check_output_dir(out: Path, resume: bool):
    """Where a run may write: a new or empty folder, or (with --resume) a run with a checkpoint. A folder of a
    run that stopped before its first checkpoint may be started afresh; a folder of the user's own, never."""
    if out.is_symlink() and not out.exists():
        raise UserInputError("--output-dir", f"{out} is a symlink that leads nowhere (or to itself)", "give a real folder")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and existing != out and not existing.is_dir():
        raise UserInputError("--output-dir", f"{existing} is a file, so {out} cannot be made", "give a folder")
    if existing is not None and existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError("--output-dir", f"{existing} cannot be written by this user", "give a folder you can write to")
    if out.exists() and not out.is_dir():
        raise UserInputError("--output-dir", f"{out} is a file", "give a folder (new, empty, or a run's)")
    if resume:
        return
    if out.is_dir() and any(out.iterdir()):
        if not is_run_folder(out):
            raise UserInputError("--output-dir", f"{out} holds files that are not a raysearch run", "give a new or empty folder")
        if finished_or_checkpointed(out):
            raise UserInputError("output_dir", f"{out} already holds a run", "pass --resume to continue it, or choose another --output-dir")


def start_afresh(out: Path):
    """Keep the metrics of a run that stopped before its first checkpoint beside the new run's (nothing is lost)."""
    metrics = out / METRICS_FILE
    if metrics.exists():
        metrics.replace(out / f"metrics.stopped-{int(metrics.stat().st_mtime)}.jsonl")


def _config_changes(before: dict, after: dict, prefix: str = "") -> dict:
    """{dotted key: [before, after]} for every setting that differs."""
    changes = {}
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes.update(_config_changes(a, b, f"{prefix}{key}."))
        elif a != b:
            changes[f"{prefix}{key}"] = [a, b]
    return changes


def create(out: Path, config):
    """A new run's folder: the marker first, then the config it starts with."""
    start_afresh(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_MARKER).write_text(json.dumps({"started": True}))
    except OSError as e:  # a folder this user may not write (root passes os.access, not every file system)
        raise UserInputError("--output-dir", f"cannot write {out} ({e.strerror})", "give a folder you can write to") from None
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def finish(out: Path, final: dict, keep_checkpoints: bool):
    """A finished run: its final metrics; the checkpoints (hundreds of MB) go unless kept (to extend the run later)."""
    (out / FINAL_METRICS).write_text(json.dumps(final, indent=2))
    if not keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS_DIR, ignore_errors=True)


def record_changes(out: Path, state: dict, config):
    """A resume with other settings than the checkpoint's: refuse a change of the model's shape; otherwise say so,
    keep the record in config_changes.jsonl, and let config.yaml describe the run as it now continues."""
    changes = _config_changes(state["config"], config.to_dict())
    shape = {key: values for key, values in changes.items() if key.startswith(SHAPE_SETTINGS)}
    if shape:
        key, (a, b) = next(iter(shape.items()))
        raise UserInputError("--resume", f"the checkpoint's run has {key} {a!r}, this config {b!r}: a resume cannot change the model",
                             "resume with the config the run was started with (its config.yaml), or start a new --output-dir")
    if not changes:
        return
    shown = ", ".join(f"{key} {a!r} -> {b!r}" for key, (a, b) in changes.items())
    print(f"raysearch: resuming at step {state['step']} with changed settings: {shown}", file=sys.stderr)
    with (out / CHANGES_FILE).open("a") as f:
        f.write(json.dumps({"step": state["step"], "changes": changes}) + "\n")
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
