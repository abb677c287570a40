"""The joint pruning-transfer loop of one configuration (one trial).

`run(config, reporter)` builds everything, then steps, evaluates every `eval_every` steps and checkpoints
the full state, and exports the pruned target model at the end. Each concept does its own part: the data
and its per-step batches (`data.TrialData`), the pruning phase's objective (`transfer.JointModel`), the
sparsity controller (`pruning.SparsityController`). It knows nothing of Ray: distributed workers call the
same function with their rank.
"""
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from . import data as data_lib
from . import metrics as metrics_lib
from .config import SPARSITY_TOLERANCE, TrainConfig
from .distill.loss import HiddenProjection, distilled_target_loss
from .distill.teacher import load_or_train_teacher
from .errors import UserInputError
from .exported import export_classifier, measure_latency, save_exported
from .heads import MLMHead
from .model_card import card_facts, write_model_card
from .remote_code.pruned_structure import ClassificationHead
from .models import check_model, load_backbone, load_tokenizer
from .optim import adamw
from .pruning import EncoderShape, SparsityController, exact_remaining
from .pruning.controller import unique
from .reporting import Reporter
from .schedule import lr_factor
from .transfer.joint import build_joint_model

CHECKPOINT_FILE = "checkpoint.pt"
FAULT_DELAY_S = 5.0
CHECKPOINT_FORMAT = 1


def _device(config: TrainConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device", "is cuda, but torch sees no CUDA device here", "use device: auto (CUDA where there is one) or cpu")
    return torch.device(config.device)


def load_tasks(config: TrainConfig):
    """Load and validate both tasks (raises UserInputError before any model is built). A transfer task that is
    given is checked even when the run does not use it, so that a typo surfaces before the preset changes."""
    target = data_lib.load_task(config.target, "target")
    transfer = data_lib.load_task(config.transfer.task, "transfer.task") if config.transfer.task is not None else None
    return target, transfer if config.transfer.active else None


def preflight(config: TrainConfig):
    """Everything that can be wrong with a run before it writes anything: both tasks, the model, the device.
    Returns the loaded tasks."""
    tasks = load_tasks(config)
    check_model(config.model)
    _device(config)
    return tasks


class JointTrainer:
    """One run: build (data, teacher, model, optimizers), then `train_step`, `evaluate`, `save_checkpoint`."""

    def __init__(self, config: TrainConfig, tasks=None, rank: int = 0, world_size: int = 1):
        self.config, self.rank, self.world_size = config, rank, world_size
        self.device = _device(config)
        target_task, transfer_task = tasks or load_tasks(config)
        self.tokenizer = load_tokenizer(config.model)
        self.data = data_lib.TrialData(config, target_task, transfer_task, self.tokenizer, rank, world_size)
        # the teacher before seeding: training it (once, then cached) must not shift this run's random numbers
        self.teacher, self.teacher_info = None, {}
        if config.distill.enabled:
            self.teacher, self.teacher_info = load_or_train_teacher(config, target_task, self.data.target_train_split["texts"],
                                                                    self.tokenizer, self.device, train_dense)
        torch.manual_seed(config.seed)
        self.model, self.shape = self._build_model(target_task, transfer_task)
        self.controller = SparsityController(self.model.gate_sets(), self.model.lagrangians, self.model.all_gate_sets(), config.pruning)
        controlled = self.controller.parameter_ids()
        self.weights = unique(p for p in self.model.parameters() if id(p) not in controlled)
        self.weights_optimizer = adamw(self.weights, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.weights_optimizer, self._lr_factor)
        # progress
        self.step = 0
        self.frozen_z = None  # the target's gates, fixed when the fine-tuning phase starts
        self.elapsed = 0.0
        self.best = {}
        self._loss_sum, self._loss_count = 0.0, 0
        self.resumed_from = None  # the checkpoint's step, reported once with the next evaluation

    def _build_model(self, target_task, transfer_task):
        config = self.config
        backbone = load_backbone(config.model, self.tokenizer)
        shape = EncoderShape.from_hf_config(backbone.config)

        def transfer_head(encoder):
            if transfer_task.kind == "mlm":
                return MLMHead(shape.hidden_size, encoder.backbone.embeddings.word_embeddings, backbone.config.layer_norm_eps)
            return ClassificationHead(shape.hidden_size, transfer_task.num_labels, pooling=config.model.pooling)

        target_head = ClassificationHead(shape.hidden_size, target_task.num_labels, pooling=config.model.pooling)
        model = build_joint_model(backbone, shape, target_head, transfer_head, self.data.transfer_kind, config.transfer,
                                  config.pruning.structures, config.pruning.init_keep).to(self.device)
        if self.teacher is not None:  # a submodule, so that the weights' optimizer and the checkpoints hold it
            model.distill_projection = HiddenProjection(shape.hidden_size).to(self.device)
        return model, shape

    @property
    def optimizers(self) -> dict:
        """Every optimizer by name (the checkpoint's layout): the weights', the gates', the multipliers'."""
        return {"weights": self.weights_optimizer, **self.controller.optimizers}

    def _lr_factor(self, step: int) -> float:
        c = self.config
        finetune_lr = c.pruning.finetune_learning_rate
        ratio = 1.0 if finetune_lr is None or c.learning_rate == 0 else finetune_lr / c.learning_rate
        return lr_factor(step, c.pruning_steps, c.max_steps, c.lr_warmup_steps, ratio)

    def _autocast(self):
        enabled = self.config.precision == "bf16" and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @property
    def in_pruning_phase(self) -> bool:
        return self.step < self.config.pruning_steps

    def eval_gates(self) -> dict:
        """The target branch's deterministic gates now (frozen once fine-tuning starts)."""
        return self.frozen_z if self.frozen_z is not None else self.model.target.encoder.gates.deterministic()

    # ------------------------------------------------------------------ step

    def train_step(self) -> dict:
        model, step = self.model, self.step
        pruning = self.in_pruning_phase
        if not pruning and self.frozen_z is None:
            # fitted to the target size, not the expected one: a controller that lags a short ramp would otherwise
            # decide the size the run ends with (MiniLM, 40 warm-up steps of 80: exact 0.76-0.81 for a 0.6 target)
            self.frozen_z = model.target.encoder.gates.at_sparsity(self.config.pruning.target_sparsity)
        model.train()
        with self._autocast():
            if pruning:
                target_loss = lambda: self._target_loss(self.data.target_batch(step, self.device), model.target.encoder.gates.sample())  # noqa: E731
                loss, parts = model.pruning_objective(step, target_loss, lambda: self.data.transfer_batch(step, self.device))
                lagrangian, sparsity_parts = self.controller.lagrangian_terms(step)
                if lagrangian is not None:
                    loss = loss + lagrangian
                parts.update(sparsity_parts)
            else:
                parts = self._target_loss(self.data.target_batch(step, self.device), self.frozen_z)
                loss = parts["target_loss"]
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        self._sync_gradients()
        torch.nn.utils.clip_grad_norm_(self.weights, self.config.max_grad_norm)
        self.weights_optimizer.step()
        if pruning:
            self.controller.step()
        self.scheduler.step()
        self.step += 1
        out = {k: float(v.detach()) for k, v in parts.items()}
        out["loss"] = float(loss.detach())
        self._loss_sum += out["loss"]
        self._loss_count += 1
        return out

    def _target_loss(self, batch, z) -> dict:
        """{"target_loss": cross-entropy on the target batch} or, with a teacher, the distilled loss and its parts."""
        if self.teacher is None:
            return {"target_loss": self.model.target.loss(batch, z)}
        return distilled_target_loss(self.model.target, self.teacher, self.model.distill_projection, batch, z, self.config.distill)

    def _sync_gradients(self):
        """Average gradients over workers (explicit all-reduce: tied tensors and hooks make DDP's wrapper awkward)."""
        if self.world_size == 1 or not dist.is_initialized():
            return
        for p in list(self.model.parameters()):
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.world_size)

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def predict(self, branch, split, z, mlm_seed: int | None = None):
        branch.eval()
        predictions, labels = [], []
        for batch in self.data.eval_batches(split, self.device, mlm_seed):
            gold = batch["labels"]
            labels.append((gold[gold != -100] if mlm_seed is not None else gold).cpu())
            with self._autocast():
                predictions.append(branch(batch, z).argmax(-1).cpu())
        return torch.cat(predictions).numpy(), torch.cat(labels).numpy()

    def evaluate(self, final: bool = False) -> dict:
        """Target dev at every evaluation; target test only where it is reported (a new best dev, the final
        evaluation); transfer dev at the final evaluation (every one with `transfer_dev_every_eval`)."""
        z, data = self.eval_gates(), self.data
        target = self.model.target
        metrics = {"step": self.step, "phase": "pruning" if self.in_pruning_phase else "finetune", "target_metric": data.target_metric}
        pred, gold = self.predict(target, data.target_eval["dev"], z)
        metrics["target_dev"] = metrics_lib.compute(data.target_metric, pred, gold)
        new_best = self._is_new_best(metrics["target_dev"])
        if "test" in data.target_eval and (final or new_best):
            pred, gold = self.predict(target, data.target_eval["test"], z)
            metrics["target_test"] = metrics_lib.compute(data.target_metric, pred, gold)
        if self.model.transfer is not None and data.transfer_dev is not None and (final or self.config.transfer_dev_every_eval):
            transfer_z = self.model.transfer.encoder.gates.deterministic()
            mlm_seed = self.config.seed if data.transfer_kind == "mlm" else None
            pred, gold = self.predict(self.model.transfer, data.transfer_dev, transfer_z, mlm_seed)
            metrics["transfer_dev"] = metrics_lib.compute(data.transfer_metric, pred, gold)
        remaining = exact_remaining(self.shape, z)
        metrics.update(
            expected_sparsity=float(target.encoder.gates.expected_sparsity().detach()),
            exact_sparsity=1.0 - remaining / self.shape.full_prunable_params,
            remaining_params=remaining,
            full_params=self.shape.full_prunable_params,
            train_loss=self._loss_sum / max(1, self._loss_count),
            lambda_1=self.model.lagrangians["target"].lambda_1.item(),
            lambda_2=self.model.lagrangians["target"].lambda_2.item(),
            wall_time=self.elapsed,
        )
        if self.config.latency.enabled:  # of the model this evaluation's structure exports to
            metrics["latency_ms"] = self.latency_ms(z)
        if final:  # how far the structure the run ends with is from the sparsity it was asked for
            metrics["sparsity_off_target"] = metrics["exact_sparsity"] - self.config.pruning.target_sparsity
        if self.teacher_info:
            metrics["teacher_dev"] = self.teacher_info.get("target_dev")
        if self.resumed_from is not None:  # so that a search can say that a trial's worker restarted
            metrics["resumed_from_step"], self.resumed_from = self.resumed_from, None
        self._loss_sum, self._loss_count = 0.0, 0
        if new_best:
            self.best = {"best_target_dev": metrics["target_dev"], "best_step": self.step}
            if "target_test" in metrics:
                self.best["test_at_best_dev"] = metrics["target_test"]
        metrics.update(self.best)
        return metrics

    def latency_ms(self, z: dict) -> float:
        """Inference latency of the physically pruned target model with gates `z`, on the trial's device (inputs
        no longer than the model's max_seq_length, which real inputs never exceed)."""
        exported, _ = export_classifier(self.model.target, z)
        latency = self.config.latency
        return measure_latency(exported, latency.batch_size, min(latency.seq_len, self.config.model.max_seq_length),
                               latency.warmup, latency.repeats, self.device)

    def _is_new_best(self, dev: float) -> bool:
        """Selection on dev among evaluations at the final structure only (the fine-tuning phase, gates frozen): an
        evaluation from the pruning phase is of a model the trial does not end with (measured: a step-40 model at
        sparsity 0.52 selected beside an export at 0.79)."""
        return not self.in_pruning_phase and (not self.best or dev > self.best["best_target_dev"])

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "scheduler": self.scheduler.state_dict(),
            "frozen_z": self.frozen_z,
            "best": self.best,
            "elapsed": self.elapsed,
            "loss_window": [self._loss_sum, self._loss_count],
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }

    def load_state_dict(self, state: dict, source: str = "the checkpoint"):
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:  # another model, other structures or another transfer setting
            raise UserInputError("--resume", f"{source} holds another model's weights ({(str(e).splitlines()[1:] or [str(e)])[0].strip()[:120]})",
                                 "resume with the config the run was started with (its config.yaml), or start a new --output-dir") from None
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.best, self.elapsed = state["step"], state["best"], state["elapsed"]
        # checkpoints are read onto the CPU (map_location): the fine-tuning phase's fixed gates go back to this run's device
        frozen = state["frozen_z"]
        self.frozen_z = {kind: z.to(self.device) for kind, z in frozen.items()} if frozen is not None else None
        self._loss_sum, self._loss_count = state["loss_window"]
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def save_checkpoint(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (CHECKPOINT_FILE + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(directory / CHECKPOINT_FILE)  # atomic: a crash never leaves a half checkpoint
        return directory


def train_dense(config: TrainConfig, target_task) -> tuple[dict, dict]:
    """Dense fine-tuning of `config` (nothing gated, no transfer) to its max_steps, in memory: (the target
    branch's state dict, the final metrics). The distillation teacher is trained this way."""
    trainer = JointTrainer(config, tasks=(target_task, None))
    while trainer.step < config.max_steps:
        trainer.train_step()
    return trainer.model.target.state_dict(), trainer.evaluate(final=True)


def read_checkpoint(directory: str | Path) -> dict:
    path = Path(directory) / CHECKPOINT_FILE
    return torch.load(path, map_location="cpu", weights_only=True)


def newest_intact_checkpoint(directories: list[Path], warn=print) -> tuple[Path | None, dict | None]:
    """(folder, state) of the newest of `directories` (oldest first) whose checkpoint reads back; a damaged newer
    one (a full disk, a copy cut short) is skipped with a warning naming both."""
    for index in range(len(directories) - 1, -1, -1):
        try:
            state = read_checkpoint(directories[index])
        except Exception as e:  # torch raises several types for a truncated or corrupt file
            following = directories[index - 1] if index else None
            warn(f"raysearch: warning: checkpoint {directories[index]} cannot be read ({type(e).__name__}); "
                 + (f"resuming from the one before it, {following}" if following else "no earlier checkpoint"))
            continue
        return directories[index], state
    return None, None


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
    return {"export_dir": str(out_dir), "export_parameters": meta["parameters"], "export_prunable_parameters": meta["prunable_parameters"],
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
        if config.fault_inject_step == trainer.step and resume_from is None and rank == world_size - 1:
            _die_for_testing()
        last = trainer.step == config.max_steps
        if trainer.step % config.eval_every == 0 or trainer.step % config.checkpoint_every == 0 or last:
            final = _evaluate_and_report(trainer, reporter, rank)
    if resumed_at_the_end:  # only its final evaluation is left (every rank reports it, as often as rank 0)
        final = trainer.evaluate(final=True) if rank == 0 else None
        reporter.report(final, None)
    if rank == 0:
        warn_if_off_target(final, config)
    if export_dir is not None and rank == 0:
        # a new dict: the reported one may still be on its way to Ray (its report is asynchronous)
        final = {**final, **export_target(trainer, Path(export_dir))}
        write_model_card(export_dir, card_facts(config, final))
    return final




def warn_if_off_target(final: dict, config: TrainConfig, warn=None) -> str | None:
    """A run that ends more than SPARSITY_TOLERANCE away from its target sparsity says so, with the figures (short
    warm-ups overshoot: MiniLM with 40 warm-up steps of 80 at target 0.6 ended at 0.76-0.81)."""
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
    """One torch thread per CPU this process was given.

    torch's default is one per core of the machine: two such processes on 2 cores ran a step 9x slower
    than one thread each (docs/PERFORMANCE.md).
    """
    torch.set_num_threads(max(1, int(cpus)))


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _die_for_testing():
    """Testing aid (`fault_inject_step`): the last rank's process is SIGKILLed, on its first attempt only.

    It waits first: Ray Train collects reports by polling the workers, so a worker that dies
    within a moment of reporting can lose that report (and its checkpoint) with it. The wait makes
    the crash one that happens after the last checkpoint reached the controller.
    """
    time.sleep(FAULT_DELAY_S)
    os.kill(os.getpid(), signal.SIGKILL)


def _evaluate_and_report(trainer: JointTrainer, reporter: Reporter, rank: int) -> dict | None:
    """Rank 0 checkpoints and evaluates; every rank reports (Ray Train's report is collective). Where the reporter
    keeps a checkpoint without metrics, the last step's is written before the final evaluation (the longest), so
    that a run stopped during that evaluation resumes with no step left to train; a Tune result must carry the
    objectives, so under Ray the last checkpoint goes with the final metrics."""
    config, step = trainer.config, trainer.step
    last = step == config.max_steps
    early = last and getattr(reporter, "keeps_checkpoints_alone", False)
    if early:
        reporter.report(None, trainer.save_checkpoint(reporter.checkpoint_dir(step)) if rank == 0 else None)
    metrics = trainer.evaluate(final=last) if rank == 0 else None
    checkpoint = None
    if rank == 0 and (step % config.checkpoint_every == 0 or last) and not early:
        checkpoint = trainer.save_checkpoint(reporter.checkpoint_dir(step))
    reporter.report(metrics, checkpoint)
    return metrics
