"""The two branches and their coupling (DESIGN.md §2).

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
    """Both branches, the coupling between them, and one Lagrangian per distinct gate set."""

    def __init__(self, target: Branch, transfer: Branch | None, coupling: TransferConfig):
        super().__init__()
        self.target, self.transfer, self.coupling = target, transfer, coupling
        self.coupled_names: list[str] = []
        if transfer is not None:
            self.coupled_names = ["encoder." + n for n in names_in_groups(target.encoder, coupling.groups)]
            if coupling.coupling == "tied":
                target_params = dict(target.named_parameters())
                for name in self.coupled_names:
                    _set_parameter(transfer, name, target_params[name])
        self.lagrangians = nn.ModuleDict({"target": Lagrangian()})
        if transfer is not None and not self.masks_tied:
            self.lagrangians["transfer"] = Lagrangian()

    @property
    def masks_tied(self) -> bool:
        return self.transfer is not None and self.coupling.coupling == "tied" and "masks" in self.coupling.groups

    def gate_sets(self) -> dict[str, GateSet]:
        """The gate sets under sparsity control, keyed like `lagrangians`."""
        sets = {"target": self.target.encoder.gates}
        if "transfer" in self.lagrangians:
            sets["transfer"] = self.transfer.encoder.gates
        return sets

    def coupling_started(self, step: int) -> bool:
        return step >= self.coupling.transfer_start_step

    def transfer_loss(self, batch, step: int) -> torch.Tensor:
        z = self.transfer.encoder.gates.sample()
        if self.coupling.coupling == "tied" and not self.coupling_started(step):
            # same values, but no transfer gradient into the shared tensors before the start step
            params = dict(self.transfer.named_parameters(remove_duplicate=False))
            detached = {name: params[name].detach() for name in self.coupled_names}
            z = {k: v.detach() for k, v in z.items()} if self.masks_tied else z
            return functional_call(self.transfer, detached, (batch, z), {"compute_loss": True})
        return self.transfer.loss(batch, z)

    def coupling_penalty(self, step: int) -> torch.Tensor | None:
        if self.transfer is None or self.coupling.coupling != "soft" or not self.coupling_started(step):
            return None
        target_params = dict(self.target.named_parameters())
        transfer_params = dict(self.transfer.named_parameters())
        penalty = sum(((target_params[n] - transfer_params[n]) ** 2).sum() for n in self.coupled_names)
        return self.coupling.coupling_strength * penalty


def build_joint_model(backbone: nn.Module, shape: EncoderShape, target_head: nn.Module, make_transfer_head,
                      transfer_kind: str | None, coupling: TransferConfig, structures, init_keep: float) -> JointModel:
    """Wrap `backbone` as the target branch and, when transfer can matter, a copy as the transfer branch.

    `make_transfer_head(encoder)` builds the transfer head (it may tie to that encoder's embeddings).
    The copy is taken before hooks are installed, so each branch's hooks see its own gates.
    """
    gates = GateSet(shape, structures, init_keep=init_keep)
    transfer = None
    if coupling.active:
        transfer_encoder = GatedEncoder(copy.deepcopy(backbone), copy.deepcopy(gates))
        transfer = Branch(transfer_encoder, make_transfer_head(transfer_encoder), transfer_kind)
    target = Branch(GatedEncoder(backbone, gates), target_head, "classification")
    return JointModel(target, transfer, coupling)
