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
    def deterministic(self, remaining: float | None = None) -> dict[str, torch.Tensor]:
        """Evaluation/export gates: the expected number of units of each kind, ranked by score.

        The coarse structures (whole blocks, heads, hidden dims) round to whole units; the FFN
        units (2D+1 parameters each, the finest granularity) then absorb that rounding, so the
        exact size equals `remaining` (default: the expected size that the Lagrangian controls)
        to within one unit. The loop freezes the structure with `remaining` at the target size,
        so that a run ends at the sparsity it was asked for also where the controller lags.
        """
        z = consistent_structure(self._per_kind(lambda la: hard_concrete.deterministic(la.detach()), 1.0))
        if "intermediate" in self.log_alpha:
            if remaining is None:
                remaining = float(remaining_params(self.shape, **self.keep_probabilities()))
            z = match_size(self.shape, z, {kind: la.detach() for kind, la in self.log_alpha.items()}, remaining)
        return z

    def at_sparsity(self, target_sparsity: float) -> dict[str, torch.Tensor]:
        """The deterministic structure fitted to a target sparsity (the structure the fine-tuning phase trains)."""
        return self.deterministic(remaining=(1.0 - target_sparsity) * self.shape.full_prunable_params)

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


def match_size(shape: EncoderShape, z: dict, log_alpha: dict[str, torch.Tensor], remaining: float) -> dict:
    """Drop the lowest-scored kept FFN units, or restore the highest-scored pruned ones, until the exact remaining
    count is as close as one unit to `remaining`. `log_alpha`: the gated kinds' scores (`intermediate` at least).

    Units are restored inside kept FFN blocks first; when those have no room left, the highest-scored removed block
    is reopened (all blocks count as open when kind `ffn` is not gated), so that a model whose blocks rounded away can
    grow back. When every FFN unit is gone and the model is still too large, the
    lowest-scored heads go, one at a time, and FFN units then refill what the last one overshot. A restored gate
    takes its noise-free value, or 1 where that is 0 (its gate had closed: the unit comes back at full scale, and
    the fine-tuning phase trains it in).
    """
    z = {kind: value.clone() for kind, value in z.items()}
    unit_log_alpha, block_log_alpha, head_log_alpha = log_alpha["intermediate"], log_alpha.get("ffn"), log_alpha.get("head")
    unit_cost = 2 * int((z["hidden"] > 0).sum()) + 1

    def restored(scores: torch.Tensor) -> torch.Tensor:
        value = hard_concrete.noise_free(scores)
        return torch.where(value > 0, value, torch.ones_like(value))

    def lowest(scores: torch.Tensor, candidates: torch.Tensor, count: int) -> torch.Tensor:
        return torch.argsort(scores.masked_fill(~candidates, float("inf")).flatten())[: min(count, int(candidates.sum()))]

    # each pass drops units or a head, or restores units or a block, and heads never come back: a bound, not a guess
    for _ in range(2 * (shape.layers * (shape.heads + 1) + 2)):
        surplus = round((exact_remaining(shape, z) - remaining) / unit_cost)
        units, blocks = z["intermediate"], z["ffn"]
        open_block = (blocks > 0).unsqueeze(-1).expand_as(units)
        if surplus > 0:
            kept_units = (units > 0) & open_block
            if kept_units.any():
                units.view(-1)[lowest(unit_log_alpha, kept_units, surplus)] = 0.0
                continue  # exact now, unless there were fewer units than the surplus
            kept_heads = (z["head"] > 0) & (z["mha"] > 0).unsqueeze(-1)
            if head_log_alpha is None or not kept_heads.any():
                break
            z["head"].view(-1)[lowest(head_log_alpha, kept_heads, 1)] = 0.0
            z = consistent_structure(z)
            continue
        if surplus == 0:
            break
        pruned_units = (units == 0) & open_block
        if pruned_units.any():
            order = lowest(-unit_log_alpha, pruned_units, -surplus)
            units.view(-1)[order] = restored(unit_log_alpha).view(-1)[order]
            continue  # exact now, unless a reopened block's bias or the room running out left some to do
        closed = blocks == 0
        if not closed.any():
            break
        if block_log_alpha is None:  # blocks not gated: one closed only because its units were
            blocks[int(closed.nonzero()[0])] = 1.0
        else:
            best = int(torch.argmax(block_log_alpha.masked_fill(~closed, float("-inf"))))
            blocks[best] = restored(block_log_alpha[best])
    return consistent_structure(z)


def exact_remaining(shape: EncoderShape, z: dict[str, torch.Tensor]) -> int:
    """Exact remaining prunable parameters of the structure where z > 0."""
    indicators = {k: (v > 0).to(torch.float64) for k, v in consistent_structure(z).items()}
    return int(round(remaining_params(shape, **indicators).item()))
