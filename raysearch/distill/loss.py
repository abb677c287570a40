"""Distillation from a dense teacher into the pruned student (CoFi, Xia et al. 2022, §3.3).

Target loss with distillation:
    (1 - logit_weight) * CE(student, labels)
    + logit_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))
    + hidden_weight * mean over matched layers of MSE(W h_student[s], h_teacher[t])
The student layer s matched to each teacher layer t is chosen anew every step: the one whose
transformed output is closest, never earlier than the previous match (pruning can empty whole
layers, so the student's layer l need not do the teacher's layer l's work). W is a learned D x D
map, initialised to the identity, trained with the weights.
"""
import torch
import torch.nn.functional as F
from torch import nn


def teacher_layers(num_layers: int) -> list[int]:
    """Layer outputs counted down from the last: every third from 9 layers on (CoFi's 2, 5, 8, 11 of 12), else every
    second (1, 3, 5 of 6)."""
    step = 3 if num_layers >= 9 else 2
    return list(range(num_layers - 1, -1, -step))[::-1]


def logit_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, -1), F.softmax(teacher.float() / t, -1), reduction="batchmean") * t * t


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over the real tokens of a batch (padding excluded), per element."""
    weights = mask.unsqueeze(-1).to(a.dtype)
    return ((a - b) ** 2 * weights).sum() / (weights.sum() * a.shape[-1]).clamp(min=1.0)


def matched_layer_loss(student_layers, teacher_layers_out, projection: nn.Module, mask: torch.Tensor, layers: list[int]):
    """Mean MSE of each chosen teacher layer against its best-matching later-or-equal student layer.

    student_layers / teacher_layers_out: tuples of L+1 hidden states (embeddings first), as returned by
    `GatedEncoder(..., all_layers=True)`; `layers` indexes layer outputs 0..L-1.
    """
    students = [projection(student_layers[i + 1]) for i in range(len(student_layers) - 1)]
    losses, first = [], 0
    for t in layers:
        candidates = torch.stack([masked_mse(students[s], teacher_layers_out[t + 1], mask) for s in range(first, len(students))])
        best = int(candidates.detach().argmin())
        losses.append(candidates[best])
        first += best
    return torch.stack(losses).mean()


class HiddenProjection(nn.Module):
    """W of the layer loss: student hidden space -> teacher hidden space, starting as the identity."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, hidden)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(hidden))
            self.linear.bias.zero_()

    def forward(self, x):
        return self.linear(x)


def distilled_target_loss(student, teacher, projection: HiddenProjection, batch: dict, z, config) -> dict:
    """The target branch's loss with distillation, and its parts (for logging). `config`: a DistillConfig."""
    logits, layers = student.logits_and_layers(batch, z)
    with torch.no_grad():
        teacher_logits, teacher_hidden = teacher.logits_and_layers(batch, None)
    parts = {"target_ce": F.cross_entropy(logits.float(), batch["labels"]),
             "distill_logit": logit_loss(logits, teacher_logits, config.temperature)}
    total = (1 - config.logit_weight) * parts["target_ce"] + config.logit_weight * parts["distill_logit"]
    if config.hidden_weight > 0:
        chosen = teacher_layers(len(layers) - 1)
        parts["distill_hidden"] = matched_layer_loss(layers, teacher_hidden, projection, batch["attention_mask"], chosen)
        total = total + config.hidden_weight * parts["distill_hidden"]
    parts["target_loss"] = total
    return parts
