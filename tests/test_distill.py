"""Distillation from the dense teacher: the loss, the layer matching, the cached teacher, resume."""
import json

import pytest
import torch

from raysearch.config import DistillConfig
from raysearch.distill.loss import HiddenProjection, logit_loss, matched_layer_loss, teacher_layers
from raysearch.distill.teacher import teacher_key
from raysearch.errors import UserInputError
from raysearch.loop import run
from raysearch.trainer import JointTrainer

from .conftest import MemoryReporter, tiny_train_config

DISTILL = {"enabled": True, "teacher_steps": 6, "logit_weight": 0.5, "hidden_weight": 1.0}


def test_logit_loss_is_zero_only_when_the_student_matches():
    teacher = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    assert float(logit_loss(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(logit_loss(teacher.flip(-1), teacher, 2.0)) > 0.1


def test_each_teacher_layer_is_matched_to_the_closest_later_student_layer():
    torch.manual_seed(0)
    teacher = tuple(torch.randn(2, 5, 8) for _ in range(7))  # embeddings + 6 layers
    # the student's layer 3 and 5 outputs equal the teacher's; its layer 4 output equals the teacher's layer 1
    student = tuple(torch.randn(2, 5, 8) for _ in range(7))
    student = student[:5] + (teacher[2],) + (teacher[6],)
    student = student[:4] + (teacher[4],) + student[5:]
    mask = torch.ones(2, 5)
    identity = HiddenProjection(8)
    assert teacher_layers(6) == [1, 3, 5] and teacher_layers(12) == [2, 5, 8, 11]
    loss = matched_layer_loss(student, teacher, identity, mask, [3, 5])
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)  # layer 3 -> student layer 3, layer 5 -> student layer 5
    monotone = matched_layer_loss(student, teacher, identity, mask, [5, 1])  # 1 may not be matched before 5's match
    assert float(monotone.detach()) > 0.1


def test_bad_distill_settings_fail_with_the_field():
    with pytest.raises(UserInputError, match="distill.logit_weight"):
        DistillConfig(logit_weight=1.5)
    with pytest.raises(UserInputError, match="distill.teacher_steps"):
        DistillConfig(teacher_steps=0)


def test_teacher_is_trained_once_and_shared(pair_task, tmp_path):
    config = tiny_train_config(pair_task, max_steps=4, eval_every=4, cache_dir=str(tmp_path / "cache"), distill=DISTILL)
    first = JointTrainer(config)
    folders = list((tmp_path / "cache" / "teachers").iterdir())
    teacher_dirs = [f for f in folders if f.is_dir()]
    assert len(teacher_dirs) == 1
    info = json.loads((teacher_dirs[0] / "teacher.json").read_text())
    assert info["steps"] == 6 and 0.0 <= info["target_dev"] <= 1.0
    stamp = (teacher_dirs[0] / "model.safetensors").stat().st_mtime_ns

    second = JointTrainer(config)  # same data, seed and budget: the cached teacher, not a new one
    assert (teacher_dirs[0] / "model.safetensors").stat().st_mtime_ns == stamp
    for a, b in zip(first.teacher.parameters(), second.teacher.parameters()):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in second.teacher.parameters())
    # another seed draws other limited data: another teacher
    other = tiny_train_config(pair_task, max_steps=4, cache_dir=str(tmp_path / "cache"), distill=DISTILL, seed=1)
    assert teacher_key(other, [("x",)]) != teacher_key(config, [("x",)])
    assert teacher_key(config, [("x",)]) != teacher_key(config, [("y",)])


def test_distilled_run_trains_and_resumes_exactly(pair_task, tmp_path):
    config = tiny_train_config(pair_task, max_steps=8, eval_every=4, cache_dir=str(tmp_path / "cache"), distill=DISTILL,
                               pruning={"target_sparsity": 0.3, "warmup_steps": 4, "finetune_steps": 2})
    trainer = JointTrainer(config)
    parts = trainer.train_step()
    assert {"target_ce", "distill_logit", "distill_hidden"} <= set(parts)
    expected = 0.5 * parts["target_ce"] + 0.5 * parts["distill_logit"] + parts["distill_hidden"]
    assert parts["target_loss"] == pytest.approx(expected, rel=1e-5)
    assert any(p is trainer.model.distill_projection.linear.weight for group in trainer.optimizers["weights"].param_groups
               for p in group["params"])

    losses_full = {}
    run(config, MemoryReporter(tmp_path / "a"), progress=lambda s, m: losses_full.__setitem__(s, m["loss"]))
    reporter = MemoryReporter(tmp_path / "b")
    final = run(config, reporter)
    assert final["teacher_dev"] is not None
    resumed = {}
    run(config, MemoryReporter(tmp_path / "c"), resume_from=reporter.checkpoints[0], progress=lambda s, m: resumed.__setitem__(s, m["loss"]))
    assert sorted(resumed) == [5, 6, 7, 8]
    for step in resumed:
        assert resumed[step] == pytest.approx(losses_full[step], abs=1e-6)
