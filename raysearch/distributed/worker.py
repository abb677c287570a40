"""The loop inside a trial: in Tune's trial process itself (a 1-worker trial), or on each of a TorchTrainer's N
workers (raysearch.distributed.trial chooses). Both resume from the trial's newest checkpoint and export at the end."""
import contextlib
import ctypes
import gc
import json
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

import ray
import ray.train
from ray import tune
from ray.train import Checkpoint

from ..checkpoints import newest_intact_checkpoint
from ..experiment import EXPORT_CARD, Folder, trial_model_dir
from ..reporting import EXPORT_DIR


class TemporaryCheckpoints:
    """The loop writes each checkpoint into a temporary folder; the reporter copies it to the trial's storage."""

    def checkpoint_dir(self, step: int) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"raysearch_ckpt_{step}_"))


class RayTrainReporter(TemporaryCheckpoints):
    """Hands the loop's metrics and checkpoints to ray.train.report (every worker must call it)."""

    keeps_checkpoints_alone = False  # every Tune result must carry the search's objectives

    def report(self, metrics: dict | None, checkpoint: Path | None) -> None:
        try:
            ray.train.report(metrics or {}, checkpoint=Checkpoint.from_directory(str(checkpoint)) if checkpoint else None)
        finally:
            if checkpoint is not None:
                shutil.rmtree(checkpoint, ignore_errors=True)  # Ray has copied it to the run's storage


class TrialFolderReporter(TemporaryCheckpoints):
    """A 1-worker trial in Tune's trial process: metrics to tune.report; checkpoints into the trial's folder of the
    experiment's train_runs, named as Ray Train names them (so they sort by time), the newest `keep` kept."""

    keeps_checkpoints_alone = True  # Tune never sees them: the last step's is written before the final evaluation

    def __init__(self, run: Folder, keep: int):
        self.run, self.keep = run, max(1, keep)

    def report(self, metrics: dict | None, checkpoint: Path | None) -> None:
        # metrics first (tune.report returns once the driver has taken them): a checkpoint is never ahead of the
        # history, so a trial restarted after its driver died re-trains from the one before rather than skip a report
        if metrics is not None:
            tune.report(metrics)
        if checkpoint is not None:
            self.run.upload(checkpoint, datetime.today().strftime("checkpoint_%Y-%m-%d_%H-%M-%S.%f"))
            shutil.rmtree(checkpoint, ignore_errors=True)
            for old in self.checkpoints()[:-self.keep]:
                self.run.delete(old)

    def checkpoints(self) -> list[str]:
        return [name for name in self.run.list() if name.startswith("checkpoint_")]

    def newest_checkpoint(self, scratch: str) -> Path | None:
        """The newest checkpoint that reads back (on remote storage: copied into SCRATCH); None: the trial starts afresh."""
        return newest_intact_checkpoint([self.run.local(name, scratch) for name in self.checkpoints()])[0]


def train_in_trial(loop_config: dict, run: Folder, keep_checkpoints: int):
    """A 1-worker trial: the loop in this (Tune's trial) process, from the newest checkpoint in RUN if there is one."""
    reporter = TrialFolderReporter(run, keep_checkpoints)
    try:
        with tempfile.TemporaryDirectory(prefix="raysearch_resume_") as local:
            train_and_export(loop_config, reporter, 0, 1, reporter.newest_checkpoint(local))
    finally:
        release_memory()


def release_memory():
    """Give what the trial freed back to the system before the process takes the next trial: glibc keeps freed memory
    for reuse, and without this a reused trial process under Ray grew by about 1.5 GB per MiniLM trial
    (docs/PERFORMANCE.md, "Memory of a reused trial process")."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS): its allocator returns memory itself
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def train_loop_per_worker(loop_config: dict):
    """Entry point of every Ray Train worker of a multi-worker trial; resumes from the run's latest checkpoint when
    restarted."""
    context = ray.train.get_context()
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as resume_from:
        train_and_export(loop_config, RayTrainReporter(), context.get_world_rank(), context.get_world_size(), resume_from)


def train_and_export(loop_config: dict, reporter, rank: int, world_size: int, resume_from: str | Path | None):
    """Run the loop of the trial's validated config; at the end rank 0 exports the pruned target model into the
    experiment (models/<trial id>) and reports the export check."""
    from ..loop import run  # here: Train's controller imports this module too, and needs no model code

    # as many torch threads as CPUs Ray gave this process (at least one, for a 0-CPU worker)
    threads = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    with tempfile.TemporaryDirectory(prefix="raysearch_export_") as export_dir:
        exporting = rank == 0 and bool(loop_config.get("experiment"))
        final = run(loop_config["config"], reporter, resume_from=resume_from, rank=rank, world_size=world_size,
                    threads=threads, export_dir=export_dir if exporting else None)
        if exporting:
            final = publish_export(final, export_dir, loop_config["experiment"], trial_model_dir(loop_config["trial_id"]))
    reporter.report(final if exporting else None, None)  # collective: the export check joins the trial's results


def publish_export(final: dict, export_dir: str, experiment: str, name: str) -> dict:
    """Copy the exported model into the experiment (as NAME), with its export check and sizes beside it."""
    final = {**final, EXPORT_DIR: f"{experiment}/{name}"}
    card = {k: v for k, v in final.items() if k.startswith("export_")}
    Path(export_dir, EXPORT_CARD).write_text(json.dumps(card, indent=1))
    Folder(experiment).upload(export_dir, name)
    return final
