"""The joint pruning-transfer loop of one configuration (one trial).

`run(config, reporter)` builds everything, trains, evaluates every `eval_every` steps,
checkpoints the full state, and exports the pruned target model at the end. It knows
nothing of Ray: distributed workers call the same function with their rank.
"""
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from . import data as data_lib
from . import metrics as metrics_lib
from .config import TrainConfig
from .distill.loss import HiddenProjection, distilled_target_loss
from .distill.teacher import load_or_train_teacher
from .models import ClassificationHead, MLMHead, load_backbone, load_tokenizer
from .pruning import EncoderShape, exact_remaining, target_sparsity_at
from .pruning.export import export_classifier, save_exported
from .reporting import Reporter
from .schedule import lr_factor
from .transfer.joint import build_joint_model

CHECKPOINT_FILE = "checkpoint.pt"
FAULT_EXIT_CODE = 75
FAULT_DELAY_S = 5.0
CHECKPOINT_FORMAT = 1


def _device(config: TrainConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


def load_tasks(config: TrainConfig):
    """Load and validate both tasks (raises UserInputError before any model is built)."""
    target = data_lib.load_task(config.target, "target")
    transfer = data_lib.load_task(config.transfer.task, "transfer.task") if config.transfer.active else None
    return target, transfer


class JointTrainer:
    """Holds the models, data streams, optimizers and progress of one run."""

    def __init__(self, config: TrainConfig, tasks=None, rank: int = 0, world_size: int = 1):
        self.config, self.rank, self.world_size = config, rank, world_size
        self.device = _device(config)
        target_task, transfer_task = tasks or load_tasks(config)
        self.tokenizer = load_tokenizer(config.model)
        max_len = config.model.max_seq_length
        cache = config.resolved_cache_dir
        self.pad_to = max_len if config.model.pad_to_max_length else None
        train = data_lib.subsample(target_task.splits["train"], config.target_train_size, config.seed)
        # the teacher first: training it (once, then cached) must not shift this run's random numbers
        self.teacher, self.teacher_info = None, {}
        if config.distill.enabled:
            self.teacher, self.teacher_info = load_or_train_teacher(config, target_task, train["texts"], self.tokenizer, self.device)
        torch.manual_seed(config.seed)

        # ---- data (target training set subsampled: the limited-data setting)
        self.target_metric, self.transfer_kind = target_task.metric, transfer_task.kind if transfer_task else None
        self.target_train = data_lib.encode(train, self.tokenizer, max_len, cache)
        # evaluation splits capped at eval_max_examples, the same rows for every trial and seed (comparable quality)
        capped = lambda split: data_lib.subsample(split, config.eval_max_examples, seed=0)  # noqa: E731
        self.target_eval = {role: data_lib.encode(capped(target_task.splits[role]), self.tokenizer, max_len, cache)
                            for role in ("dev", "test") if target_task.has(role)}
        self.target_stream = data_lib.BatchStream(len(self.target_train), config.batch_size, config.seed, rank, world_size)
        if transfer_task is not None:
            self.transfer_metric = transfer_task.metric if transfer_task.kind == "classification" else "accuracy"
            self.transfer_train = data_lib.encode(transfer_task.splits["train"], self.tokenizer, max_len, cache)
            dev = transfer_task.splits.get("dev")
            self.transfer_dev = data_lib.encode(capped(dev), self.tokenizer, max_len, cache) if dev else None
            self.transfer_stream = data_lib.BatchStream(len(self.transfer_train), config.transfer.batch_size or config.batch_size,
                                                        config.seed + 1, rank, world_size)

        # ---- model
        backbone = load_backbone(config.model, self.tokenizer)
        self.shape = EncoderShape.from_hf_config(backbone.config)
        hidden = self.shape.hidden

        def transfer_head(encoder):
            if transfer_task.kind == "mlm":
                return MLMHead(hidden, encoder.backbone.embeddings.word_embeddings, backbone.config.layer_norm_eps)
            return ClassificationHead(hidden, transfer_task.num_labels, pooling=config.model.pooling)

        target_head = ClassificationHead(hidden, target_task.num_labels, pooling=config.model.pooling)
        self.model = build_joint_model(backbone, self.shape, target_head, transfer_head,
                                       self.transfer_kind, config.transfer, config.pruning.structures,
                                       config.pruning.init_keep).to(self.device)
        if self.teacher is not None:  # a submodule, so that the weights' optimizer and the checkpoints hold it
            self.model.distill_projection = HiddenProjection(hidden).to(self.device)

        # ---- optimisation: weights, gates and multipliers each with their own optimizer
        unique = lambda params: list({id(p): p for p in params}.values())  # noqa: E731  (tied tensors once)
        gate_params = unique(p for gs in self._all_gate_sets() for p in gs.parameters())
        gate_ids = {id(p) for p in gate_params}
        lagrangian_params = list(self.model.lagrangians.parameters())
        lagrangian_ids = {id(p) for p in lagrangian_params}
        weights = unique(p for p in self.model.parameters() if id(p) not in gate_ids | lagrangian_ids)
        self.weights = weights
        self.optimizers = {"weights": torch.optim.AdamW(weights, lr=config.learning_rate, weight_decay=config.weight_decay)}
        if gate_params:  # no gates at all (structures: []) is plain fine-tuning
            self.optimizers["gates"] = torch.optim.AdamW(gate_params, lr=config.pruning.mask_lr, weight_decay=0.0)
            self.optimizers["lagrangian"] = torch.optim.AdamW(lagrangian_params, lr=config.pruning.lagrangian_lr,
                                                              weight_decay=0.0, maximize=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizers["weights"], self._lr_factor)

        # ---- progress
        self.step = 0
        self.frozen_z = None  # the structure, fixed when fine-tuning starts
        self.elapsed = 0.0
        self.best = {}
        self._loss_sum, self._loss_count = 0.0, 0

    # ------------------------------------------------------------------ helpers

    def _lr_factor(self, step: int) -> float:
        c = self.config
        finetune_lr = c.pruning.finetune_learning_rate
        ratio = 1.0 if finetune_lr is None or c.learning_rate == 0 else finetune_lr / c.learning_rate
        return lr_factor(step, c.pruning_steps, c.max_steps, c.lr_warmup_steps, ratio)

    def _all_gate_sets(self):
        sets = [self.model.target.encoder.gates]
        if self.model.transfer is not None:
            sets.append(self.model.transfer.encoder.gates)
        return sets

    def _autocast(self):
        enabled = self.config.precision == "bf16" and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _target_batch(self, step):
        idx = self.target_stream.indices(step)
        return data_lib.collate(self.target_train, idx, self.tokenizer.pad_token_id, self.device, self.pad_to)

    def _transfer_batch(self, step):
        idx = self.transfer_stream.indices(step)
        batch = data_lib.collate(self.transfer_train, idx, self.tokenizer.pad_token_id, self.device, self.pad_to)
        if self.transfer_kind == "mlm":
            batch = data_lib.mask_for_mlm(batch, self.tokenizer, self.config.seed * self.world_size + self.rank, step)
        return batch

    @property
    def pruning(self) -> bool:
        return self.step < self.config.pruning_steps

    def structure(self) -> dict:
        """The target branch's current evaluation gates (frozen once fine-tuning starts)."""
        return self.frozen_z if self.frozen_z is not None else self.model.target.encoder.gates.deterministic()

    # ------------------------------------------------------------------ training

    def train_step(self) -> dict:
        config, model, step = self.config, self.model, self.step
        if not self.pruning and self.frozen_z is None:
            self.frozen_z = model.target.encoder.gates.deterministic()
        model.train()
        parts = {}
        with self._autocast():
            if self.pruning:
                loss = torch.zeros((), device=self.device)
                if config.transfer.target_weight > 0:
                    parts["target_loss"] = self._target_loss(self._target_batch(step), model.target.encoder.gates.sample(), parts)
                    loss = loss + config.transfer.target_weight * parts["target_loss"]
                if model.transfer is not None:
                    parts["transfer_loss"] = model.transfer_loss(self._transfer_batch(step), step)
                    loss = loss + config.transfer.transfer_weight * parts["transfer_loss"]
                penalty = model.coupling_penalty(step)
                if penalty is not None:
                    parts["coupling_penalty"] = penalty
                    loss = loss + penalty
                target_now = target_sparsity_at(step, config.pruning.target_sparsity, config.pruning.warmup_steps)
                for key, gate_set in model.gate_sets().items() if "gates" in self.optimizers else ():
                    expected = gate_set.expected_sparsity()
                    parts[f"{key}_expected_sparsity"] = expected
                    loss = loss + model.lagrangians[key](expected, target_now)
            else:
                parts["target_loss"] = self._target_loss(self._target_batch(step), self.frozen_z, parts)
                loss = parts["target_loss"]
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        self._sync_gradients()
        torch.nn.utils.clip_grad_norm_(self.weights, config.max_grad_norm)
        self.optimizers["weights"].step()
        if self.pruning and "gates" in self.optimizers:
            self.optimizers["gates"].step()
            self.optimizers["lagrangian"].step()
            for key, lagrangian in self.model.lagrangians.items():
                lagrangian.project_(parts[f"{key}_expected_sparsity"], target_now)
            for gate_set in self._all_gate_sets():
                gate_set.clamp_()
        self.scheduler.step()
        self.step += 1
        out = {k: float(v.detach()) for k, v in parts.items()}
        out["loss"] = float(loss.detach())
        self._loss_sum += out["loss"]
        self._loss_count += 1
        return out

    def _target_loss(self, batch, z, parts: dict) -> torch.Tensor:
        """Cross-entropy on the target batch, or the distilled loss (its parts go to `parts`)."""
        if self.teacher is None:
            return self.model.target.loss(batch, z)
        distilled = distilled_target_loss(self.model.target, self.teacher, self.model.distill_projection, batch, z, self.config.distill)
        parts.update({k: v for k, v in distilled.items() if k != "target_loss"})
        return distilled["target_loss"]

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
        bs = self.config.eval_batch_size
        for number, indices in enumerate(data_lib.length_sorted_batches(split, bs)):
            batch = data_lib.collate(split, indices, self.tokenizer.pad_token_id, self.device)
            if mlm_seed is not None:
                batch = data_lib.mask_for_mlm(batch, self.tokenizer, mlm_seed, number)
                labels.append(batch["labels"][batch["labels"] != -100].cpu())
            else:
                labels.append(batch["labels"].cpu())
            with self._autocast():
                predictions.append(branch(batch, z).argmax(-1).cpu())
        return torch.cat(predictions).numpy(), torch.cat(labels).numpy()

    def evaluate(self, final: bool = False) -> dict:
        """Target dev at every evaluation; target test only where it is reported (a new best dev, the final
        evaluation); transfer dev at the final evaluation (every one with `transfer_dev_every_eval`)."""
        z = self.structure()
        target = self.model.target
        metrics = {"step": self.step, "phase": "pruning" if self.pruning else "finetune", "target_metric": self.target_metric}
        pred, gold = self.predict(target, self.target_eval["dev"], z)
        metrics["target_dev"] = metrics_lib.compute(self.target_metric, pred, gold)
        new_best = self._is_new_best(metrics["target_dev"])
        if "test" in self.target_eval and (final or new_best):
            pred, gold = self.predict(target, self.target_eval["test"], z)
            metrics["target_test"] = metrics_lib.compute(self.target_metric, pred, gold)
        if self.model.transfer is not None and self.transfer_dev is not None and (final or self.config.transfer_dev_every_eval):
            transfer_z = self.model.transfer.encoder.gates.deterministic()
            mlm_seed = self.config.seed if self.transfer_kind == "mlm" else None
            pred, gold = self.predict(self.model.transfer, self.transfer_dev, transfer_z, mlm_seed)
            metrics["transfer_dev"] = metrics_lib.compute(self.transfer_metric, pred, gold)
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
        if self.teacher_info:
            metrics["teacher_dev"] = self.teacher_info.get("target_dev")
        self._loss_sum, self._loss_count = 0.0, 0
        if new_best:
            self.best = {"best_target_dev": metrics["target_dev"], "best_step": self.step}
            if "target_test" in metrics:
                self.best["test_at_best_dev"] = metrics["target_test"]
        metrics.update(self.best)
        return metrics

    def _is_new_best(self, dev: float) -> bool:
        """Selection on dev among evaluations at the final target sparsity (from the warm-up's end on)."""
        return self.step >= self.config.pruning.warmup_steps and (not self.best or dev > self.best["best_target_dev"])

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

    def load_state_dict(self, state: dict):
        self.model.load_state_dict(state["model"])
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.frozen_z, self.best, self.elapsed = state["step"], state["frozen_z"], state["best"], state["elapsed"]
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


def read_checkpoint(directory: str | Path) -> dict:
    path = Path(directory) / CHECKPOINT_FILE
    return torch.load(path, map_location="cpu", weights_only=True)


def export_target(trainer: JointTrainer, out_dir: Path) -> dict:
    """Export the pruned target model and check it against the masked model on dev."""
    z = trainer.structure()
    exported, structure = export_classifier(trainer.model.target, z)
    meta = save_exported(exported, structure, out_dir, trainer.tokenizer)
    dev = trainer.target_eval["dev"]
    trainer.model.target.eval()
    agree, total, max_diff = 0, 0, 0.0
    with torch.no_grad():  # one pass over dev: masked and exported logits side by side
        for start in range(0, len(dev), trainer.config.eval_batch_size):
            idx = range(start, min(start + trainer.config.eval_batch_size, len(dev)))
            batch = data_lib.collate(dev, idx, trainer.tokenizer.pad_token_id, "cpu")
            logits = exported(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            on_device = {k: (v.to(trainer.device) if v is not None else None) for k, v in batch.items()}
            reference = trainer.model.target(on_device, z).float().cpu()
            max_diff = max(max_diff, float((logits - reference).abs().max()))
            agree += int((logits.argmax(-1) == reference.argmax(-1)).sum())
            total += len(idx)
    agreement = agree / total
    return {"export_dir": str(out_dir), "export_parameters": meta["parameters"], "export_prunable_parameters": meta["prunable_parameters"],
            "export_size_bytes": meta["size_on_disk_bytes"], "export_dev_agreement": agreement, "export_max_logit_diff": max_diff}


def run(config: TrainConfig, reporter: Reporter, resume_from: str | Path | None = None, export_dir: str | Path | None = None,
        rank: int = 0, world_size: int = 1, progress=None, tasks=None, threads: int | None = None) -> dict:
    """Train one configuration to max_steps; returns the final metrics.

    `progress(step, step_metrics)` is called after every step (e.g. a progress bar).
    `threads`: torch's intra-op threads, the CPUs this process was given (None leaves torch's setting).
    Only rank 0 evaluates, reports and exports.
    """
    if threads is not None:
        set_threads(threads)
    trainer = JointTrainer(config, tasks=tasks, rank=rank, world_size=world_size)
    if resume_from is not None:
        trainer.load_state_dict(read_checkpoint(resume_from))
    final = None
    while trainer.step < config.max_steps:
        started = time.perf_counter()
        step_metrics = trainer.train_step()
        trainer.elapsed += time.perf_counter() - started
        if not all(math.isfinite(v) for v in step_metrics.values()):
            raise FloatingPointError(f"non-finite loss at step {trainer.step}: {step_metrics}; lower learning_rate or mask_lr")
        if progress is not None:
            progress(trainer.step, step_metrics)
        if config.fault_inject_step == trainer.step and resume_from is None:
            _die_for_testing()
        last = trainer.step == config.max_steps
        if trainer.step % config.eval_every == 0 or trainer.step % config.checkpoint_every == 0 or last:
            final = _evaluate_and_report(trainer, reporter, rank)
    if final is None:  # resumed from the final checkpoint: nothing left to train
        final = trainer.evaluate(final=True)
    if export_dir is not None and rank == 0:
        final.update(export_target(trainer, Path(export_dir)))
    return final


def set_threads(cpus: float):
    """One torch thread per CPU this process was given.

    torch's default is one per core of the machine: two such processes on 2 cores ran a step 9x slower
    than one thread each (docs/PERFORMANCE.md).
    """
    torch.set_num_threads(max(1, int(cpus)))


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _die_for_testing():
    """Testing aid (`fault_inject_step`): the process dies abruptly, on its first attempt only.

    It waits first: Ray Train collects reports by polling the workers, so a worker that dies
    within a moment of reporting can lose that report (and its checkpoint) with it. The wait makes
    the crash one that happens after the last checkpoint reached the controller.
    """
    time.sleep(FAULT_DELAY_S)
    os._exit(FAULT_EXIT_CODE)


def _evaluate_and_report(trainer: JointTrainer, reporter: Reporter, rank: int) -> dict | None:
    """Rank 0 evaluates and checkpoints; every rank reports (Ray Train's report is collective)."""
    config, step = trainer.config, trainer.step
    metrics = trainer.evaluate(final=step == config.max_steps) if rank == 0 else None
    checkpoint = None
    if rank == 0 and (step % config.checkpoint_every == 0 or step == config.max_steps):
        checkpoint = trainer.save_checkpoint(reporter.checkpoint_dir(step))
    reporter.report(metrics, checkpoint)
    return metrics
