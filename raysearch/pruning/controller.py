"""The sparsity controller: drives each gate set's expected sparsity to the target while the task trains.

Per pruning step: the target ramps linearly from 0 over the warm-up (`target_sparsity_at`); each gate set
adds its Lagrangian term to the loss; after the backward pass the gates take a descent step and the
multipliers an ascent step, lambda_1 is projected (anti-windup, docs/METHOD.md "Sparsity control") and the
gates' log-alphas are clamped. The gates and multipliers have their own optimizers, apart from the
weights', so that their learning rates (`mask_lr`, `lagrangian_lr`) and schedules stay their own.
"""
import torch
from torch import nn

from ..config import PruningConfig
from ..optim import adamw
from .gates import GateSet
from .lagrangian import target_sparsity_at


def unique(params) -> list:
    """Each tensor once (tied tensors appear under several names)."""
    return list({id(p): p for p in params}.values())


class SparsityController:
    def __init__(self, controlled: dict[str, GateSet], lagrangians: nn.ModuleDict, all_gate_sets: list[GateSet],
                 config: PruningConfig):
        """`controlled`: the gate sets under sparsity control, keyed like `lagrangians` (one multiplier pair each);
        `all_gate_sets`: every gate set whose log-alphas train (clamped after each step)."""
        self.controlled, self.lagrangians, self.all_gate_sets, self.config = controlled, lagrangians, all_gate_sets, config
        self.gate_params = unique(p for gates in all_gate_sets for p in gates.parameters())
        self.optimizers = {}
        if self.gate_params:  # no gates at all (structures: []) is plain fine-tuning
            self.optimizers["gates"] = adamw(self.gate_params, lr=config.mask_lr, weight_decay=0.0)
            self.optimizers["lagrangian"] = adamw(lagrangians.parameters(), lr=config.lagrangian_lr, weight_decay=0.0, maximize=True)
        self._last = None  # (expected sparsity per gate set, target) of the step in progress

    @property
    def active(self) -> bool:
        return bool(self.optimizers)

    def parameter_ids(self) -> set[int]:
        """The tensors this controller trains (the weights' optimizer must leave them alone)."""
        return {id(p) for p in self.gate_params} | {id(p) for p in self.lagrangians.parameters()}

    def lagrangian_terms(self, step: int) -> tuple[torch.Tensor | None, dict]:
        """The step's Lagrangian terms summed (None when nothing is gated) and each gate set's expected sparsity."""
        if not self.active:
            return None, {}
        target = target_sparsity_at(step, self.config.target_sparsity, self.config.warmup_steps)
        expected = {key: gates.expected_sparsity() for key, gates in self.controlled.items()}
        self._last = (expected, target)
        total = sum(self.lagrangians[key](value, target) for key, value in expected.items())
        return total, {f"{key}_expected_sparsity": value for key, value in expected.items()}

    def step(self):
        """After the backward pass of a pruning step: descent on the gates, ascent on the multipliers,
        the anti-windup projection, the clamp."""
        if not self.active:
            return
        self.optimizers["gates"].step()
        self.optimizers["lagrangian"].step()
        expected, target = self._last
        for key, lagrangian in self.lagrangians.items():
            lagrangian.project_(expected[key], target)
        for gates in self.all_gate_sets:
            gates.clamp_()
