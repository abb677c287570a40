"""The joint pruning-transfer loop of one configuration (one trial).

`run(config, reporter)` builds a `JointTrainer` (raysearch.trainer), steps it, evaluates every `eval_every` steps and
checkpoints its full state, and exports the pruned target model at the end. It knows nothing of Ray: distributed
workers call the same function with their rank, and every rank reports as often as rank 0 (Ray Train's report is
collective; raysearch.reporting).
"""
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch

from .checkpoints import read_checkpoint
from .config import SPARSITY_TOLERANCE, TrainConfig
from .exported import export_classifier, save_exported
from .model_card import card_facts, write_model_card
from .reporting import EXPORT_DIR, Reporter, report_collectively
from .trainer import JointTrainer

# testing hook (tests/conftest.py, `kill_worker_after`): the last rank SIGKILLs itself after this step, first attempt only
KILL_AFTER_STEP_ENV = "RAYSEARCH_TEST_KILL_AFTER_STEP"
FAULT_DELAY_S = 5.0  # Ray Train polls reports: a worker dying at once could take its last checkpoint with it


def export_target(trainer: JointTrainer, out_dir: Path) -> dict:
    """Export the pruned target model and check it against the masked model on dev."""
    z = trainer.eval_gates()
    exported, kept = export_classifier(trainer.model.target, z)
    meta = save_exported(exported, kept, out_dir, trainer.tokenizer)
    trainer.model.target.eval()
    agree, total, max_diff = 0, 0, 0.0
    with torch.no_grad():  # one pass over dev: masked and exported logits side by side
        for batch in trainer.data.eval_batches(trainer.data.target_eval["dev"], "cpu"):
            logits = exported(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            on_device = {k: (v.to(trainer.device) if v is not None else None) for k, v in batch.items()}
            reference = trainer.model.target(on_device, z).float().cpu()
            max_diff = max(max_diff, float((logits - reference).abs().max()))
            agree += int((logits.argmax(-1) == reference.argmax(-1)).sum())
            total += len(logits)
    agreement = agree / total
    return {EXPORT_DIR: str(out_dir), "export_parameters": meta["parameters"], "export_prunable_parameters": meta["prunable_parameters"],
            "export_size_bytes": meta["size_on_disk_bytes"], "export_dev_agreement": agreement, "export_max_logit_diff": max_diff,
            "export_stock_class": meta["stock_class"]}


def run(config: TrainConfig, reporter: Reporter, resume_from: str | Path | None = None, export_dir: str | Path | None = None,
        rank: int = 0, world_size: int = 1, progress=None, tasks=None, threads: int | None = None) -> dict:
    """Train one configuration to max_steps; returns the final metrics.

    `progress(step, step_metrics)` is called after every step (e.g. a progress bar).
    `threads`: torch's intra-op threads, the CPUs this process was given (None leaves torch's setting).
    Only rank 0 evaluates and exports; every rank reports as often as rank 0 (Ray Train's report is collective).
    """
    if threads is not None:
        set_threads(threads)
    trainer = JointTrainer(config, tasks=tasks, rank=rank, world_size=world_size)
    if resume_from is not None:
        trainer.load_state_dict(read_checkpoint(resume_from), source=str(resume_from))
        trainer.resumed_from = trainer.step
    # read once, not every step; only a first attempt's last rank dies
    kill_after = os.environ.get(KILL_AFTER_STEP_ENV) if resume_from is None and rank == world_size - 1 else None
    final = None
    resumed_at_the_end = trainer.step >= config.max_steps  # from the last step's checkpoint: nothing left to train
    while trainer.step < config.max_steps:
        started = time.perf_counter()
        step_metrics = trainer.train_step()
        trainer.elapsed += time.perf_counter() - started
        if not all(math.isfinite(v) for v in step_metrics.values()):
            raise FloatingPointError(f"non-finite loss at step {trainer.step}: {step_metrics}; lower learning_rate or mask_lr")
        if progress is not None:
            progress(trainer.step, step_metrics)
        if kill_after == str(trainer.step):
            time.sleep(FAULT_DELAY_S)
            os.kill(os.getpid(), signal.SIGKILL)
        last = trainer.step == config.max_steps
        if trainer.step % config.eval_every == 0 or trainer.step % config.checkpoint_every == 0 or last:
            final = _evaluate_and_report(trainer, reporter, rank)
    if resumed_at_the_end:  # only its final evaluation is left
        final = report_collectively(reporter, rank, lambda: trainer.evaluate(final=True))
    if rank == 0:
        warn_if_off_target(final, config)
    if export_dir is not None and rank == 0:
        # a new dict: the reported one may still be on its way to Ray (its report is asynchronous)
        final = {**final, **export_target(trainer, Path(export_dir))}
        write_model_card(export_dir, card_facts(config, final))
    return final


def warn_if_off_target(final: dict, config: TrainConfig, warn=None) -> str | None:
    """A run that ends more than SPARSITY_TOLERANCE away from its target sparsity says so, with the figures (short
    warm-ups overshoot)."""
    off = final.get("sparsity_off_target")
    if off is None or abs(off) <= SPARSITY_TOLERANCE:
        return None
    p = config.pruning
    line = (f"raysearch: warning: the run ended at exact sparsity {final['exact_sparsity']:.3f} for a target of {p.target_sparsity:.3f} "
            f"(expected {final['expected_sparsity']:.3f}); a longer warm-up (pruning.warmup_steps, now {p.warmup_steps} of "
            f"{config.max_steps} steps) gives the controller time to land it")
    (warn or (lambda text: print(text, file=sys.stderr, flush=True)))(line)
    return line


def set_threads(cpus: float):
    """One torch thread per CPU this process was given (torch's default, one per core, oversubscribes: docs/METHOD.md, "Threads")."""
    torch.set_num_threads(max(1, int(cpus)))


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _evaluate_and_report(trainer: JointTrainer, reporter: Reporter, rank: int) -> dict | None:
    """Rank 0 checkpoints and evaluates; every rank reports (`report_collectively`). Where the reporter
    keeps a checkpoint without metrics, the last step's is written before the final evaluation (the longest), so
    that a run stopped during that evaluation resumes with no step left to train; a Tune result must carry the
    objectives, so under Ray the last checkpoint goes with the final metrics."""
    config, step = trainer.config, trainer.step
    last = step == config.max_steps
    early = last and getattr(reporter, "keeps_checkpoints_alone", False)
    save = lambda: trainer.save_checkpoint(reporter.checkpoint_dir(step))  # noqa: E731
    if early:
        report_collectively(reporter, rank, checkpoint=save)
    checkpointed = (step % config.checkpoint_every == 0 or last) and not early
    return report_collectively(reporter, rank, lambda: trainer.evaluate(final=last), save if checkpointed else None)
