"""Ray Train: one trial = one TorchTrainer run of the core loop on N workers."""
import shutil
import tempfile
from pathlib import Path

import ray.train
from ray.train import Checkpoint

from ..loop import run


class RayTrainReporter:
    """Hands the loop's metrics and checkpoints to ray.train.report (every worker must call it)."""

    keeps_checkpoints_alone = False  # every Tune result must carry the search's objectives

    def checkpoint_dir(self, step: int) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"raysearch_ckpt_{step}_"))

    def report(self, metrics: dict | None, checkpoint: Path | None) -> None:
        try:
            ray.train.report(metrics or {}, checkpoint=Checkpoint.from_directory(str(checkpoint)) if checkpoint else None)
        finally:
            if checkpoint is not None:
                shutil.rmtree(checkpoint, ignore_errors=True)  # Ray has copied it to the run's storage


def train_loop_per_worker(loop_config: dict):
    """Entry point of every Train worker; resumes from the run's latest checkpoint when restarted."""
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    config = loop_config["config"]  # the trial's validated TrainConfig
    reporter = RayTrainReporter()
    # as many torch threads as CPUs Ray gave this worker (at least one, for a 0-CPU worker)
    threads = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        run(config, reporter, rank=rank, world_size=world_size, threads=threads)
        return
    with checkpoint.as_directory() as directory:
        run(config, reporter, resume_from=directory, rank=rank, world_size=world_size, threads=threads)
