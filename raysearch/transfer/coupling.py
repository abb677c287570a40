"""The coupling modes, one class each (docs/METHOD.md, "Coupling"): what a mode shares between the branches, how the
transfer loss reaches the shared tensors, and the penalty it adds to the pruning objective.

A new mode is one subclass here, registered in COUPLINGS, and its name in raysearch.config.COUPLING_MODES.
"""
import torch
from torch import nn
from torch.func import functional_call


def _set_parameter(root: nn.Module, dotted: str, param: nn.Parameter):
    *path, leaf = dotted.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    setattr(module, leaf, param)


class Coupling:
    """No coupling: the transfer branch trains beside the target branch and shares nothing with it."""

    def __init__(self, settings, names: list[str]):
        self.settings, self.names = settings, names  # names: the coupled parameters, relative to a Branch

    def share(self, target: nn.Module, transfer: nn.Module):
        """Called once, when the branches are built."""

    @property
    def masks_shared(self) -> bool:
        """Whether both branches use the same gates (then one Lagrangian controls both)."""
        return False

    def started(self, step: int) -> bool:
        return step >= self.settings.transfer_start_step

    def transfer_loss(self, transfer: nn.Module, batch, z, step: int) -> torch.Tensor:
        return transfer.loss(batch, z)

    def penalty(self, target: nn.Module, transfer: nn.Module, step: int) -> torch.Tensor | None:
        return None


class Tied(Coupling):
    """The coupled groups are the same tensors in both branches."""

    def share(self, target, transfer):
        target_params = dict(target.named_parameters())
        for name in self.names:
            _set_parameter(transfer, name, target_params[name])

    @property
    def masks_shared(self) -> bool:
        return "masks" in self.settings.groups

    def transfer_loss(self, transfer, batch, z, step):
        if self.started(step):
            return transfer.loss(batch, z)
        # same values, but no transfer gradient into the shared tensors before the start step
        params = dict(transfer.named_parameters(remove_duplicate=False))
        detached = {name: params[name].detach() for name in self.names}
        z = {k: v.detach() for k, v in z.items()} if self.masks_shared else z
        return functional_call(transfer, detached, (batch, z), {"compute_loss": True})


class Soft(Coupling):
    """Separate tensors, pulled together by coupling_strength x the squared L2 distance of the coupled groups."""

    def penalty(self, target, transfer, step):
        if not self.started(step):
            return None
        target_params, transfer_params = dict(target.named_parameters()), dict(transfer.named_parameters())
        distance = sum(((target_params[n] - transfer_params[n]) ** 2).sum() for n in self.names)
        return self.settings.coupling_strength * distance


COUPLINGS = {"tied": Tied, "soft": Soft, "none": Coupling}
