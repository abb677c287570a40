"""One run's state and its steps: `JointTrainer` builds the data, the teacher, the joint model and the optimizers, then
trains a step, evaluates, and saves or loads its full state. The loop (raysearch.loop) drives it.
"""
from pathlib import Path

import torch
import torch.distributed as dist

from . import data as data_lib
from . import metrics as metrics_lib
from .checkpoints import write_checkpoint
from .config import TrainConfig
from .distill.loss import HiddenProjection, distilled_target_loss
from .distill.teacher import load_or_train_teacher
from .errors import UserInputError
from .exported import export_classifier, measure_latency
from .heads import MLMHead
from .models import check_model, load_backbone, load_tokenizer
from .optim import adamw
from .pruning import EncoderShape, SparsityController, exact_remaining
from .pruning.controller import unique
from .remote_code.pruned_structure import ClassificationHead
from .reporting import RESUMED_FROM
from .schedule import lr_factor
from .tasks import load_task
from .transfer.joint import build_joint_model


def _device(config: TrainConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device", "is cuda, but torch sees no CUDA device here", "use device: auto (CUDA where there is one) or cpu")
    return torch.device(config.device)


def load_tasks(config: TrainConfig):
    """Load and validate both tasks (raises UserInputError before any model is built). A transfer task that is
    given is checked even when the run does not use it, so that a typo surfaces before the preset changes."""
    target = load_task(config.target, "target")
    transfer = load_task(config.transfer.task, "transfer.task") if config.transfer.task is not None else None
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
            # fitted to the target size, not the expected one: a controller that lags a short ramp would otherwise decide it
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
            metrics[RESUMED_FROM], self.resumed_from = self.resumed_from, None
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
        evaluation from the pruning phase is of a model the trial does not end with."""
        return not self.in_pruning_phase and (not self.best or dev > self.best["best_target_dev"])

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        return {
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
        return write_checkpoint(self.state_dict(), directory)


def train_dense(config: TrainConfig, target_task) -> tuple[dict, dict]:
    """Dense fine-tuning of `config` (nothing gated, no transfer) to its max_steps, in memory: (the target
    branch's state dict, the final metrics). The distillation teacher is trained this way."""
    trainer = JointTrainer(config, tasks=(target_task, None))
    while trainer.step < config.max_steps:
        trainer.train_step()
    return trainer.model.target.state_dict(), trainer.evaluate(final=True)
