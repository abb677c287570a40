"""The distillation teacher: the dense encoder fine-tuned on the same limited target data.

Trained once per (model, target training data, seed, teacher budget) and cached on disk under
`<cache_dir>/teachers/<key>/`, so every trial of a study that asks for it shares one; a file lock
makes a second trial that asks at the same time wait for the first instead of training it twice.
The teacher is the same loop with nothing pruned (`structures: []`) and no transfer.
"""
import hashlib
import json
import os
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from ..config import TrainConfig, config_from_dict
from ..data import texts_digest

TEACHER_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "teacher.json"


def teacher_config(config: TrainConfig) -> TrainConfig:
    """The trial's config turned into dense fine-tuning on its target data, for the teacher's budget."""
    data = config.to_dict()
    steps = config.distill.teacher_steps or config.max_steps
    data.update(
        transfer={}, distill={}, max_steps=steps, eval_every=steps, checkpoint_every=steps,
        learning_rate=config.distill.teacher_learning_rate or config.learning_rate,
        pruning={"target_sparsity": 0.0, "structures": [], "warmup_steps": 0, "finetune_steps": 0},
    )
    return config_from_dict(data)


def teacher_key(config: TrainConfig, train_texts) -> str:
    """What decides the teacher's weights: its training config (not where things are written) and its data."""
    settings = teacher_config(config).to_dict()
    for incidental in ("output_dir", "cache_dir", "device", "eval_batch_size", "eval_max_examples", "transfer_dev_every_eval"):
        settings.pop(incidental)
    blob = json.dumps({"format": TEACHER_FORMAT, "config": settings, "train": texts_digest(train_texts)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def dense_branch(config: TrainConfig, num_labels: int, tokenizer):
    """An unpruned target branch (no gates) of the trial's model: the teacher's shape."""
    from ..remote_code.pruned_structure import ClassificationHead
    from ..models import load_backbone
    from ..pruning import EncoderShape, GatedEncoder, GateSet
    from ..transfer.joint import Branch

    backbone = load_backbone(config.model, tokenizer)
    shape = EncoderShape.from_hf_config(backbone.config)
    head = ClassificationHead(shape.hidden_size, num_labels, pooling=config.model.pooling)
    return Branch(GatedEncoder(backbone, GateSet(shape, [])), head, "classification")


def load_or_train_teacher(config: TrainConfig, target_task, train_texts, tokenizer, device, train_dense) -> tuple[torch.nn.Module, dict]:
    """(teacher branch, frozen, in eval mode on `device`; its info: dev/test quality, steps, key).

    `train_dense(dense_config, target_task)` -> (target branch state dict, final metrics): the loop's own
    training of a dense run, which the loop hands in (this module sits below the loop)."""
    key = teacher_key(config, train_texts)
    folder = config.resolved_cache_dir / "teachers" / key
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / INFO_FILE).is_file():
            _train_teacher(teacher_config(config), target_task, key, folder, train_dense)
    teacher = dense_branch(config, target_task.num_labels, tokenizer)
    teacher.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, json.loads((folder / INFO_FILE).read_text())


def _train_teacher(dense: TrainConfig, target_task, key: str, folder: Path, train_dense):
    weights, metrics = train_dense(dense, target_task)
    staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    staging.mkdir()
    state = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    save_file(state, str(staging / WEIGHTS_FILE))
    info = {"key": key, "steps": dense.max_steps, "seed": dense.seed,
            **{k: metrics[k] for k in ("target_dev", "target_test") if k in metrics}}
    (staging / INFO_FILE).write_text(json.dumps(info, indent=2))
    staging.replace(folder)  # the folder appears complete or not at all
