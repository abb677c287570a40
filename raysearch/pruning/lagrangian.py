"""Lagrangian sparsity control: lambda_1 (s - t) + lambda_2 (s - t)^2.

The multipliers are trained by gradient *ascent* (their optimizer uses maximize=True),
so a model that is not sparse enough is pushed harder each step until s meets t.

The ascent on lambda_1 is projected onto lambda_1 <= 0. The task loss only ever pulls
toward *less* sparsity, so a positive lambda_1 is never needed; without the projection it
winds up positive while the ramp starts below the gates' initial sparsity, holds every gate
open for tens of steps, and the delayed swing collapses the model far past the target
(measured on MiniLM-L6: exact sparsity 1.0 at step 100 of a 0.6 target). The quadratic
term (lambda_2 >= 0 by construction) pulls back from overshoot on either side.

lambda_1 is also reset to 0 whenever the expected sparsity is above the target (anti-windup,
as in a PI controller with conditional integration). The gates answer the multiplier with a
lag, so on a steep ramp lambda_1 keeps growing while they catch up; without the reset that
surplus keeps pushing after the target is crossed and unwinds only lagrangian_lr per step.
Measured on the demo's tiny BERT (target 0.9, warm-up 60): every gate closed, exact sparsity
1.0, before the reset; 0.90 with it. Nothing changes while the model is short of the target.
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
