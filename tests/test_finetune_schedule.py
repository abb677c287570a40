"""The fine-tuning phase has a learning-rate schedule of its own, so `sequential` can train its target head."""
import pytest
import torch

from raysearch.trainer import JointTrainer
from raysearch.schedule import lr_factor

from .conftest import tiny_train_config


def test_each_phase_warms_up_and_decays_on_its_own():
    factors = [lr_factor(s, pruning_steps=80, max_steps=100, warmup_steps=10) for s in range(100)]
    assert factors[9] == pytest.approx(1.0)  # peak after the first warm-up
    assert factors[79] == pytest.approx(1 / 70)  # the pruning phase decays to ~0 at its own end
    assert max(factors[80:]) == pytest.approx(1.0)  # re-warmed to the peak in the fine-tuning phase
    assert factors[81] == pytest.approx(1.0) and factors[80] == pytest.approx(0.5)  # warm-up: a tenth of 20 steps
    assert factors[99] == pytest.approx(1 / 18)
    half = [lr_factor(s, 80, 100, 10, finetune_ratio=0.5) for s in range(80, 100)]
    assert max(half) == pytest.approx(0.5)  # finetune_learning_rate = half the peak
    # without fine-tuning steps: one schedule over the whole run, as before
    assert [lr_factor(s, 100, 100, 10) for s in (0, 9, 55, 99)] == pytest.approx([0.1, 1.0, 0.5, 1 / 90])


def test_sequential_target_head_learns_during_finetuning(pair_task):
    """`sequential` turns the target loss off while pruning: its head is untouched until fine-tuning, where the
    re-warmed schedule must move it materially and bring its loss down."""
    config = tiny_train_config(pair_task, max_steps=40, eval_every=40, learning_rate=5e-3,
                               pruning={"target_sparsity": 0.3, "warmup_steps": 10, "finetune_steps": 20},
                               transfer={"task": {"source": str(pair_task)}, "preset": "sequential"})
    trainer = JointTrainer(config)
    head = trainer.model.target.head
    pruning_rates = []
    while trainer.step < config.pruning_steps:
        pruning_rates.append(trainer.optimizers["weights"].param_groups[0]["lr"])
        trainer.train_step()
    before = [p.detach().clone() for p in head.parameters()]
    loss_before = _train_set_loss(trainer)
    assert pruning_rates[-1] < 0.1 * config.learning_rate  # the pruning phase's schedule has run out
    losses, rates = [], []
    while trainer.step < config.max_steps:
        rates.append(trainer.optimizers["weights"].param_groups[0]["lr"])
        losses.append(trainer.train_step()["target_loss"])
    assert max(rates) == pytest.approx(config.learning_rate)  # re-warmed to the peak
    moved = sum(float((p.detach() - b).norm()) for p, b in zip(head.parameters(), before))
    size = sum(float(b.norm()) for b in before)
    # one schedule over the whole run (the old design) moved it 0.8x its size and lowered the loss by 0.04
    assert moved > 1.0 * size, (moved, size)
    assert _train_set_loss(trainer) < loss_before - 0.07, (loss_before, losses)  # the old design: 0.04; a GPU run: 0.097


@torch.no_grad()
def _train_set_loss(trainer) -> float:
    """The target branch's mean loss over its whole (small) training set, at the structure fine-tuning uses."""
    from raysearch import data as data_lib

    trainer.model.target.eval()
    z = trainer.model.target.encoder.gates.at_sparsity(trainer.config.pruning.target_sparsity)  # what the loop freezes
    data = trainer.data.target_train
    batch = data_lib.collate(data, range(len(data)), trainer.tokenizer, trainer.device)
    return float(trainer.model.target.loss(batch, z))


def test_finetune_learning_rate_sets_the_second_peak(pair_task):
    config = tiny_train_config(pair_task, max_steps=20, pruning={"target_sparsity": 0.3, "warmup_steps": 5, "finetune_steps": 10,
                                                                 "finetune_learning_rate": 2e-4})
    trainer = JointTrainer(config)
    rates = []
    while trainer.step < config.max_steps:
        rates.append(trainer.optimizers["weights"].param_groups[0]["lr"])
        trainer.train_step()
    assert max(rates[10:]) == pytest.approx(2e-4)
    assert max(rates[:10]) == pytest.approx(config.learning_rate)


def test_each_phase_is_transformers_linear_schedule_except_its_first_warmup_step():
    """Each phase follows transformers' get_linear_schedule_with_warmup, except that the warm-up starts one step
    later: transformers gives step 0 a rate of 0, a wasted step in each phase (1 of the fine-tuning phase's few)."""
    from transformers import get_linear_schedule_with_warmup

    def transformers_factors(steps, warmup):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        schedule = get_linear_schedule_with_warmup(optimizer, warmup, steps)
        return [schedule.lr_lambdas[0](s) for s in range(steps)]

    pruning, total, warmup = 60, 100, 10
    ours = [lr_factor(s, pruning, total, warmup) for s in range(total)]
    reference = transformers_factors(pruning, warmup) + transformers_factors(total - pruning, 4)  # 4 = a tenth of 40
    assert ours[warmup:pruning] == pytest.approx(reference[warmup:pruning])
    assert ours[pruning + 4:] == pytest.approx(reference[pruning + 4:])
    assert ours[:warmup] == pytest.approx(reference[1:warmup + 1]) and reference[0] == 0 < ours[0]
