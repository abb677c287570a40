"""The learnable gates of one encoder: a log-alpha tensor per structure kind."""
import torch
from torch import nn

from ..config import GATE_KINDS
from . import hard_concrete
from .size import EncoderShape, remaining_params, sparsity


def gate_shapes(shape: EncoderShape) -> dict[str, tuple[int, ...]]:
    return {
        "mha": (shape.layers,),
        "head": (shape.layers, shape.heads),
        "ffn": (shape.layers,),
        "intermediate": (shape.layers, shape.ffn_units),
        "hidden": (shape.hidden_size,),
    }


class GateSet(nn.Module):
    """Log-alphas for the enabled gate kinds; disabled kinds are constant 1."""

    def __init__(self, shape: EncoderShape, kinds=GATE_KINDS, init_keep: float = 0.9, init_keep_hidden: float = 0.99):
        super().__init__()
        self.shape = shape
        self.kinds = tuple(kinds)
        self._shapes = gate_shapes(shape)
        self.log_alpha = nn.ParameterDict()
        # follows the module to its device, so that the constant gates of disabled kinds land there too, also when
        # no kind is enabled (a dense run has no log-alpha to take the device from)
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)
        for kind in self.kinds:
            mean = hard_concrete.initial_log_alpha(init_keep_hidden if kind == "hidden" else init_keep)
            # small noise breaks ties so that deterministic ranking is well defined
            self.log_alpha[kind] = nn.Parameter(torch.full(self._shapes[kind], mean) + 0.01 * torch.randn(self._shapes[kind]))

    def _per_kind(self, fn, fill: float) -> dict[str, torch.Tensor]:
        out = {}
        for kind, size in self._shapes.items():
            if kind in self.log_alpha:
                out[kind] = fn(self.log_alpha[kind])
            else:
                out[kind] = torch.full(size, fill, device=self.device)
        return out

    @property
    def device(self):
        return self._device_anchor.device

    def sample(self) -> dict[str, torch.Tensor]:
        return self._per_kind(hard_concrete.sample, 1.0)

    def keep_probabilities(self) -> dict[str, torch.Tensor]:
        return self._per_kind(hard_concrete.keep_probability, 1.0)

    @torch.no_grad()
    def deterministic(self) -> dict[str, torch.Tensor]:
        """Evaluation/export gates: the expected number of units of each kind, ranked by score.

        The coarse structures (whole blocks, heads, hidden dims) round to whole units; the FFN
        units (2D+1 parameters each, the finest granularity) then absorb that rounding, so the
        exact size equals the expected size that the Lagrangian controls to within one unit.
        """
        z = consistent_structure(self._per_kind(lambda la: hard_concrete.deterministic(la.detach()), 1.0))
        if "intermediate" in self.log_alpha:
            expected = float(remaining_params(self.shape, **self.keep_probabilities()))
            z = match_expected_size(self.shape, z, self.log_alpha["intermediate"].detach(), expected)
        return z

    def expected_remaining(self) -> torch.Tensor:
        return remaining_params(self.shape, **self.keep_probabilities())

    def expected_sparsity(self) -> torch.Tensor:
        return sparsity(self.shape, self.expected_remaining())

    @torch.no_grad()
    def clamp_(self):
        for p in self.log_alpha.values():
            p.clamp_(*hard_concrete.LOG_ALPHA_RANGE)


def consistent_structure(z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A block with no surviving unit is removed, and a removed block removes its units.

    Without this an attention block whose heads are all 0 would still add its output bias,
    which the exported model (where the block is gone) cannot reproduce.
    """
    z = dict(z)
    mha = z["mha"] * (z["head"] > 0).any(-1)
    ffn = z["ffn"] * (z["intermediate"] > 0).any(-1)
    z["mha"], z["ffn"] = mha, ffn
    z["head"] = z["head"] * (mha > 0).unsqueeze(-1)
    z["intermediate"] = z["intermediate"] * (ffn > 0).unsqueeze(-1)
    return z


def match_expected_size(shape: EncoderShape, z: dict, unit_log_alpha: torch.Tensor, expected: float) -> dict:
    """Drop the lowest-scored kept FFN units, or restore the highest-scored pruned ones (in kept
    FFN blocks), until the exact remaining count is as close as one unit to `expected`."""
    unit_cost = 2 * int((z["hidden"] > 0).sum()) + 1
    surplus = round((exact_remaining(shape, z) - expected) / unit_cost)
    if surplus == 0:
        return z
    z = dict(z)
    units = z["intermediate"].clone()
    in_kept_block = (z["ffn"] > 0).unsqueeze(-1).expand_as(units)
    scores = unit_log_alpha
    if surplus > 0:
        candidates = (units > 0) & in_kept_block
        order = torch.argsort(scores.masked_fill(~candidates, float("inf")).flatten())[: min(surplus, int(candidates.sum()))]
        units.view(-1)[order] = 0.0
    else:
        noise_free = hard_concrete.noise_free(unit_log_alpha)
        candidates = (units == 0) & in_kept_block & (noise_free > 0)
        order = torch.argsort(scores.masked_fill(~candidates, float("-inf")).flatten(), descending=True)[: min(-surplus, int(candidates.sum()))]
        units.view(-1)[order] = noise_free.view(-1)[order]
    z["intermediate"] = units
    return consistent_structure(z)


def exact_remaining(shape: EncoderShape, z: dict[str, torch.Tensor]) -> int:
    """Exact remaining prunable parameters of the structure where z > 0."""
    indicators = {k: (v > 0).to(torch.float64) for k, v in consistent_structure(z).items()}
    return int(round(remaining_params(shape, **indicators).item()))
