"""Lagrangian sparsity control: lambda_1 (s - t) + lambda_2 (s - t)^2.

The multipliers are trained by gradient *ascent* (their optimizer uses maximize=True), so a model that is
not sparse enough is pushed harder each step until s meets t. After each ascent step lambda_1 is projected
onto lambda_1 <= 0 and reset to 0 while s is above t (anti-windup); docs/METHOD.md ("Sparsity control")
gives the reasons, with what went wrong without them.
"""
import torch
from torch import nn


def target_sparsity_at(step: int, final_target: float, warmup_steps: int) -> float:
    """Linear ramp from 0 to the final target over the warm-up, then constant."""
    if warmup_steps <= 0:
        return final_target
    return final_target * min(1.0, step / warmup_steps)


class Lagrangian(nn.Module):
    def __init__(self):
        super().__init__()
        self.lambda_1 = nn.Parameter(torch.zeros(()))
        self.lambda_2 = nn.Parameter(torch.zeros(()))

    def forward(self, expected_sparsity: torch.Tensor, target: float) -> torch.Tensor:
        gap = expected_sparsity - target
        return self.lambda_1 * gap + self.lambda_2 * gap * gap

    @torch.no_grad()
    def project_(self, expected_sparsity: torch.Tensor, target: float):
        """Call after each ascent step, with the expected sparsity and target that the step used.

        On the device, without reading the sparsity back: a host sync in every training step costs on a GPU."""
        short_of_target = (expected_sparsity.detach() <= target).to(self.lambda_1.dtype)
        self.lambda_1.mul_(short_of_target).clamp_(max=0.0)
