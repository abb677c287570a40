"""Hard-concrete gate math (Louizos et al., 2018), as used by CoFi pruning.

Pure functions of a log-alpha tensor: no modules, no state. A gate z in [0, 1] is a
stretched, clamped binary-concrete sample; it is exactly 0 or 1 with non-zero probability,
which is what makes whole structures removable.
"""
import math

import torch

LIMIT_LEFT = -0.1
LIMIT_RIGHT = 1.1
TEMPERATURE = 2.0 / 3.0
LOG_ALPHA_RANGE = (-10.0, 10.0)  # clamp keeps sigmoid away from saturation so gradients survive
_EPS = 1e-6


def sample(log_alpha: torch.Tensor) -> torch.Tensor:
    """One training-time gate sample per entry (uses the global torch RNG, so checkpoints replay it)."""
    u = torch.rand_like(log_alpha).clamp(_EPS, 1 - _EPS)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / TEMPERATURE)
    return (s * (LIMIT_RIGHT - LIMIT_LEFT) + LIMIT_LEFT).clamp(0.0, 1.0)


def keep_probability(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z > 0): differentiable in log_alpha; the basis of the expected model size."""
    return torch.sigmoid(log_alpha - TEMPERATURE * math.log(-LIMIT_LEFT / LIMIT_RIGHT))


def noise_free(log_alpha: torch.Tensor) -> torch.Tensor:
    """The gate value with the noise at its median: what a kept unit is scaled by at evaluation."""
    return (torch.sigmoid(log_alpha) * (LIMIT_RIGHT - LIMIT_LEFT) + LIMIT_LEFT).clamp(0.0, 1.0)


def deterministic(log_alpha: torch.Tensor) -> torch.Tensor:
    """Evaluation gates, ranked within the last dimension.

    Each row keeps round(sum of keep probabilities) units, those with the highest log-alpha;
    a kept unit takes the noise-free gate value (folded into the weights at export), the
    rest are exactly 0.
    """
    values = noise_free(log_alpha)
    rows = log_alpha.reshape(-1, log_alpha.shape[-1])
    values = values.reshape(rows.shape).clone()
    keep_counts = torch.round(keep_probability(rows).sum(dim=-1)).long()
    order = torch.argsort(rows, dim=-1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(rows.shape[-1], device=rows.device).expand_as(order).contiguous())
    values[ranks >= keep_counts.unsqueeze(-1)] = 0.0
    return values.reshape(log_alpha.shape)


def initial_log_alpha(keep_fraction: float) -> float:
    """log-alpha whose noise-free gate is `keep_fraction` before stretching (CoFi's droprate init)."""
    keep_fraction = min(max(keep_fraction, 1e-4), 1 - 1e-4)
    return math.log(keep_fraction) - math.log(1 - keep_fraction)
