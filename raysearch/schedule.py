"""The weights' learning-rate schedule: one linear warm-up/decay per phase.

Pruning phase (steps 0 .. P-1): warm up over `lr_warmup_steps` to the peak rate, then decay
linearly to 0 at the phase's end P. Fine-tuning phase (P .. max_steps-1, structure frozen): warm up
again to `finetune_learning_rate` (default: the peak rate) over a tenth of the phase, then decay to 0
at max_steps. Without its own schedule the fine-tuning phase would run on the tail of one decay over
max_steps, at most finetune_steps / max_steps of the peak rate; the `sequential` baseline, whose
target head first learns in that phase, stayed at chance (docs/METHOD.md, "Schedules and the fine-tuning phase").

Each phase is transformers' linear schedule with warm-up (`get_linear_schedule_with_warmup`) except that
its warm-up starts at step 1 of `warmup`, not 0: transformers gives a phase's first step a rate of 0, one
wasted step of the fine-tuning phase's short warm-up. A test checks the two agree everywhere else.
"""
import math

FINETUNE_WARMUP_FRACTION = 0.1


def _warmup_then_decay(step: int, length: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (length - step) / max(1, length - warmup))


def lr_factor(step: int, pruning_steps: int, max_steps: int, warmup_steps: int, finetune_ratio: float = 1.0) -> float:
    """Multiplier of the peak learning rate at `step` (LambdaLR's lambda)."""
    if step < pruning_steps:
        return _warmup_then_decay(step, pruning_steps, min(warmup_steps, pruning_steps))
    finetune_steps = max_steps - pruning_steps
    warmup = max(1, math.ceil(FINETUNE_WARMUP_FRACTION * finetune_steps))
    return finetune_ratio * _warmup_then_decay(step - pruning_steps, finetune_steps, warmup)
