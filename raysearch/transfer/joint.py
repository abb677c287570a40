"""The two branches and their coupling (docs/METHOD.md, "Two branches and the parameter groups" and "Coupling").

Target branch = gated encoder + target head; transfer branch = its own gated encoder + transfer head. How the
coupled groups relate is the coupling mode's (transfer/coupling.py); everything else is private to its branch.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TransferConfig
from ..pruning import EncoderShape, GatedEncoder, GateSet, Lagrangian
from .coupling import COUPLINGS
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


class JointModel(nn.Module):
    """Both branches, the coupling between them, the pruning phase's objective, and one Lagrangian per
    distinct gate set."""

    def __init__(self, target: Branch, transfer: Branch | None, transfer_config: TransferConfig):
        super().__init__()
        self.target, self.transfer, self.transfer_config = target, transfer, transfer_config
        names = ["encoder." + n for n in names_in_groups(target.encoder, transfer_config.groups)] if transfer is not None else []
        self.coupling = COUPLINGS[transfer_config.coupling](transfer_config, names)
        if transfer is not None:
            self.coupling.share(target, transfer)
        self.lagrangians = nn.ModuleDict({"target": Lagrangian()})
        if transfer is not None and not self.masks_tied:
            self.lagrangians["transfer"] = Lagrangian()

    @property
    def masks_tied(self) -> bool:
        return self.transfer is not None and self.coupling.masks_shared

    def gate_sets(self) -> dict[str, GateSet]:
        """The gate sets under sparsity control, keyed like `lagrangians`."""
        sets = {"target": self.target.encoder.gates}
        if "transfer" in self.lagrangians:
            sets["transfer"] = self.transfer.encoder.gates
        return sets

    def all_gate_sets(self) -> list[GateSet]:
        """Every branch's gate set (with tied masks, the same tensors twice)."""
        return [self.target.encoder.gates] + ([self.transfer.encoder.gates] if self.transfer is not None else [])

    def pruning_objective(self, step: int, target_loss, transfer_batch) -> tuple[torch.Tensor, dict]:
        """The task part of a pruning step's loss: target_weight x target loss + transfer_weight x transfer loss
        + the coupling's penalty (the sparsity controller adds its Lagrangian terms).

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
        return self.coupling.transfer_loss(self.transfer, batch, self.transfer.encoder.gates.sample(), step)

    def coupling_penalty(self, step: int) -> torch.Tensor | None:
        return self.coupling.penalty(self.target, self.transfer, step) if self.transfer is not None else None


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
