"""Ray Train: one trial = one TorchTrainer run of the core loop on N workers."""
import json
import shutil
import tempfile
from pathlib import Path

import ray.train
from ray.train import Checkpoint

from ..experiment import EXPORT_CARD, Folder, trial_model_dir
from ..reporting import EXPORT_DIR


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
    """Entry point of every Train worker; resumes from the run's latest checkpoint when restarted. At the end rank 0
    exports the pruned target model into the experiment (models/<trial id>) and reports the export check."""
    from ..loop import run  # here: Train's controller imports this module too, and needs no model code

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    config = loop_config["config"]  # the trial's validated TrainConfig
    reporter = RayTrainReporter()
    # as many torch threads as CPUs Ray gave this worker (at least one, for a 0-CPU worker)
    threads = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    with tempfile.TemporaryDirectory(prefix="raysearch_export_") as export_dir:
        exporting = rank == 0 and bool(loop_config.get("experiment"))
        kwargs = dict(rank=rank, world_size=world_size, threads=threads, export_dir=export_dir if exporting else None)
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            final = run(config, reporter, **kwargs)
        else:
            with checkpoint.as_directory() as directory:
                final = run(config, reporter, resume_from=directory, **kwargs)
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
