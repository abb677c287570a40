"""The two branches and their coupling (docs/METHOD.md, "Two branches and the parameter groups" and "Coupling").

Target branch = gated encoder + target head; transfer branch = its own gated encoder +
transfer head. Coupled groups are either the same tensors (`tied`) or separate tensors
pulled together by an L2 penalty (`soft`); everything else is private to its branch.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..config import TransferConfig
from ..pruning import EncoderShape, GatedEncoder, GateSet, Lagrangian
from .groups import names_in_groups


class Branch(nn.Module):
    def __init__(self, encoder: GatedEncoder, head: nn.Module, kind: str):
        super().__init__()
        self.encoder, self.head, self.kind = encoder, head, kind

    def forward(self, batch, z=None, compute_loss: bool = False):
        """Logits, or the cross-entropy loss on batch["labels"] with compute_loss=True."""
        hidden = self.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), z=z)
        labels = batch["labels"]
        if self.kind == "mlm":  # decode only the masked positions: the vocabulary projection is the costly part
            selected = labels != -100
            logits, labels = self.head(hidden[selected]), labels[selected]
        else:
            logits = self.head(hidden, batch["attention_mask"])
        return F.cross_entropy(logits.float(), labels) if compute_loss else logits

    def loss(self, batch, z=None):
        return self(batch, z, compute_loss=True)

    def logits_and_layers(self, batch, z=None):
        """Classification logits and the hidden states of every layer (for distillation)."""
        layers = self.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), z=z, all_layers=True)
        return self.head(layers[-1], batch["attention_mask"]), layers


def _set_parameter(root: nn.Module, dotted: str, param: nn.Parameter):
    *path, leaf = dotted.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    setattr(module, leaf, param)


class JointModel(nn.Module):
    """Both branches, the coupling between them, the pruning phase's objective, and one Lagrangian per
    distinct gate set."""

    def __init__(self, target: Branch, transfer: Branch | None, transfer_config: TransferConfig):
        super().__init__()
        self.target, self.transfer, self.transfer_config = target, transfer, transfer_config
        self.coupled_names: list[str] = []
        if transfer is not None:
            self.coupled_names = ["encoder." + n for n in names_in_groups(target.encoder, transfer_config.groups)]
            if transfer_config.coupling == "tied":
                target_params = dict(target.named_parameters())
                for name in self.coupled_names:
                    _set_parameter(transfer, name, target_params[name])
        self.lagrangians = nn.ModuleDict({"target": Lagrangian()})
        if transfer is not None and not self.masks_tied:
            self.lagrangians["transfer"] = Lagrangian()

    @property
    def masks_tied(self) -> bool:
        return self.transfer is not None and self.transfer_config.coupling == "tied" and "masks" in self.transfer_config.groups

    def gate_sets(self) -> dict[str, GateSet]:
        """The gate sets under sparsity control, keyed like `lagrangians`."""
        sets = {"target": self.target.encoder.gates}
        if "transfer" in self.lagrangians:
            sets["transfer"] = self.transfer.encoder.gates
        return sets

    def all_gate_sets(self) -> list[GateSet]:
        """Every branch's gate set (with tied masks, the same tensors twice)."""
        return [self.target.encoder.gates] + ([self.transfer.encoder.gates] if self.transfer is not None else [])

    def coupling_started(self, step: int) -> bool:
        return step >= self.transfer_config.transfer_start_step

    def pruning_objective(self, step: int, target_loss, transfer_batch) -> tuple[torch.Tensor, dict]:
        """The task part of a pruning step's loss: target_weight x target loss + transfer_weight x transfer loss
        + the soft coupling's penalty (the sparsity controller adds its Lagrangian terms).

        `target_loss()` returns {"target_loss": tensor, ...its other parts} and `transfer_batch()` the step's
        transfer batch; each is called only when its term counts (`sequential` prunes without the target loss).
        """
        settings, parts = self.transfer_config, {}
        loss = torch.zeros((), device=self.target.head.out.weight.device)
        if settings.target_weight > 0:
            parts.update(target_loss())
            loss = loss + settings.target_weight * parts["target_loss"]
        if self.transfer is not None:
            parts["transfer_loss"] = self.transfer_loss(transfer_batch(), step)
            loss = loss + settings.transfer_weight * parts["transfer_loss"]
        penalty = self.coupling_penalty(step)
        if penalty is not None:
            parts["coupling_penalty"] = penalty
            loss = loss + penalty
        return loss, parts

    def transfer_loss(self, batch, step: int) -> torch.Tensor:
        z = self.transfer.encoder.gates.sample()
        if self.transfer_config.coupling == "tied" and not self.coupling_started(step):
            # same values, but no transfer gradient into the shared tensors before the start step
            params = dict(self.transfer.named_parameters(remove_duplicate=False))
            detached = {name: params[name].detach() for name in self.coupled_names}
            z = {k: v.detach() for k, v in z.items()} if self.masks_tied else z
            return functional_call(self.transfer, detached, (batch, z), {"compute_loss": True})
        return self.transfer.loss(batch, z)

    def coupling_penalty(self, step: int) -> torch.Tensor | None:
        if self.transfer is None or self.transfer_config.coupling != "soft" or not self.coupling_started(step):
            return None
        target_params = dict(self.target.named_parameters())
        transfer_params = dict(self.transfer.named_parameters())
        penalty = sum(((target_params[n] - transfer_params[n]) ** 2).sum() for n in self.coupled_names)
        return self.transfer_config.coupling_strength * penalty


def build_joint_model(backbone: nn.Module, shape: EncoderShape, target_head: nn.Module, make_transfer_head,
                      transfer_kind: str | None, transfer_config: TransferConfig, structures, init_keep: float) -> JointModel:
    """Wrap `backbone` as the target branch and, when transfer can matter, a copy as the transfer branch.

    `make_transfer_head(encoder)` builds the transfer head (it may tie to that encoder's embeddings).
    The copy is taken before hooks are installed, so each branch's hooks see its own gates.
    """
    gates = GateSet(shape, structures, init_keep=init_keep)
    transfer = None
    if transfer_config.active:
        transfer_encoder = GatedEncoder(copy.deepcopy(backbone), copy.deepcopy(gates))
        transfer = Branch(transfer_encoder, make_transfer_head(transfer_encoder), transfer_kind)
    target = Branch(GatedEncoder(backbone, gates), target_head, "classification")
    return JointModel(target, transfer, transfer_config)
