"""Coupling modes: tied tensors, the start step, the soft penalty, presets."""
import pytest
import torch

from raysearch.config import config_from_dict
from raysearch.trainer import JointTrainer
from raysearch.config import GROUPS
from raysearch.transfer.groups import group_of

from .conftest import tiny_model_config, tiny_train_config


def _trainer(pair_task, coupling, groups, start, **extra):
    config = tiny_train_config(pair_task, transfer={"task": {"source": str(pair_task)}, "coupling": coupling, "groups": groups,
                                                    "transfer_start_step": start, **extra})
    return JointTrainer(config)


def _named(branch, group):
    return {n: p for n, p in branch.encoder.named_parameters() if group_of(n) == group}


def test_every_encoder_parameter_has_a_group(pair_task):
    trainer = _trainer(pair_task, "none", [], 0)
    groups = {group_of(n) for n, _ in trainer.model.target.encoder.named_parameters()}
    assert groups == set(GROUPS)


def test_tied_groups_share_tensors_and_others_do_not(pair_task):
    trainer = _trainer(pair_task, "tied", ["attention", "masks"], 3)
    target, transfer = trainer.model.target, trainer.model.transfer
    for group in GROUPS:
        t, s = _named(target, group), _named(transfer, group)
        assert t.keys() == s.keys()
        same = [t[n] is s[n] for n in t]
        assert all(same) if group in ("attention", "masks") else not any(same), group
    assert transfer.encoder.gates.log_alpha["head"] is target.encoder.gates.log_alpha["head"]


def test_tied_groups_get_no_transfer_gradient_before_start_step(pair_task):
    trainer = _trainer(pair_task, "tied", ["attention", "embeddings", "masks"], 3)
    model = trainer.model
    tied = {**_named(model.target, "attention"), **_named(model.target, "embeddings"), **_named(model.target, "masks")}
    private = _named(model.transfer, "ffn")

    def transfer_grads(step):
        model.zero_grad(set_to_none=True)
        model.transfer_loss(trainer.data.transfer_batch(step, trainer.device), step).backward()
        return ({n: p.grad for n, p in tied.items()}, {n: p.grad for n, p in private.items()})

    before_tied, before_private = transfer_grads(step=2)
    assert all(g is None or g.abs().sum() == 0 for g in before_tied.values())
    assert any(g is not None and g.abs().sum() > 0 for g in before_private.values())  # the branch itself still learns
    after_tied, _ = transfer_grads(step=3)
    assert all(g is not None and g.abs().sum() > 0 for n, g in after_tied.items() if "word_embeddings" in n or "query.weight" in n)


def test_soft_penalty_zero_before_start_and_positive_after(pair_task):
    config = tiny_train_config(pair_task, max_steps=8, transfer={"task": {"source": str(pair_task)}, "coupling": "soft",
                                                                   "groups": ["attention", "ffn"], "transfer_start_step": 4,
                                                                   "coupling_strength": 0.5})
    trainer = JointTrainer(config)
    seen = []
    for _ in range(8):
        seen.append((trainer.step, trainer.train_step().get("coupling_penalty")))
    assert [p for s, p in seen if s < 4] == [None] * 4  # no penalty term at all before t0
    assert all(p is not None and p > 0 for s, p in seen if s >= 4)
    # the branches are separate tensors that started equal and drifted apart
    t, s = _named(trainer.model.target, "attention"), _named(trainer.model.transfer, "attention")
    assert all(t[n] is not s[n] for n in t) and any(not torch.equal(t[n], s[n]) for n in t)


def test_no_coupling_builds_no_transfer_branch(pair_task):
    trainer = _trainer(pair_task, "none", [], 0)
    assert trainer.model.transfer is None


@pytest.mark.parametrize("preset,expected", [
    ("no_transfer", {"coupling": "none", "groups": []}),
    ("multitask", {"coupling": "tied", "groups": list(GROUPS), "transfer_start_step": 0}),
    ("sequential", {"coupling": "tied", "groups": list(GROUPS), "target_weight": 0.0}),
])
def test_presets(pair_task, preset, expected):
    config = config_from_dict({"model": tiny_model_config(), "target": {"source": str(pair_task)}, "max_steps": 10,
                               "pruning": {"warmup_steps": 2, "finetune_steps": 4},
                               "transfer": {"preset": preset, "task": {"source": str(pair_task)}}})
    for key, value in expected.items():
        assert getattr(config.transfer, key) == value


def test_sequential_prunes_on_transfer_then_finetunes_on_target(pair_task):
    config = config_from_dict({"model": tiny_model_config(), "target": {"source": str(pair_task)}, "max_steps": 6, "batch_size": 8,
                               "pruning": {"warmup_steps": 2, "finetune_steps": 2},
                               "transfer": {"preset": "sequential", "task": {"source": str(pair_task)}}})
    trainer = JointTrainer(config)
    parts = [trainer.train_step() for _ in range(6)]
    assert all("target_loss" not in p and "transfer_loss" in p for p in parts[:4])
    assert all("target_loss" in p and "transfer_loss" not in p for p in parts[4:])
    assert trainer.frozen_z is not None
