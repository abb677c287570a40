"""The CUDA path: what differs from the CPU tests when a GPU trains (devices of tensors in checkpoints and exports,
bf16 autocast, timing with synchronisation). Skipped where torch sees no CUDA device (CI has none); the rest of the
suite also runs on the GPU there, since `device: auto` picks it."""
import math

import pytest
import torch

from raysearch.exported import load_exported
from raysearch.loop import run
from raysearch.checkpoints import read_checkpoint

from .conftest import MemoryReporter, tiny_model_config, tiny_train_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TRANSFER = {"coupling": "tied", "groups": ["attention", "ffn", "masks"], "transfer_start_step": 2}


def _config(pair_task, **overrides):
    settings = {"max_steps": 12, "eval_every": 4, "device": "cuda",
                "pruning": {"target_sparsity": 0.5, "warmup_steps": 4, "finetune_steps": 6},
                "transfer": {"task": {"source": str(pair_task)}, **TRANSFER}}
    return tiny_train_config(pair_task, **{**settings, **overrides})


def test_a_joint_run_on_cuda_reaches_its_sparsity_and_exports_a_model_that_agrees(pair_task, tmp_path):
    config = _config(pair_task, max_steps=240, eval_every=80, model=tiny_model_config(hidden_size=64, num_attention_heads=8, intermediate_size=128),
                     pruning={"target_sparsity": 0.5, "warmup_steps": 100, "structures": ["head", "intermediate", "hidden"]})
    final = run(config, MemoryReporter(tmp_path / "run"), export_dir=tmp_path / "model")
    assert abs(final["exact_sparsity"] - 0.5) <= 0.03  # as on the CPU (tests/test_lagrangian.py)
    assert final["export_dev_agreement"] == 1.0 and final["export_max_logit_diff"] < 1e-3
    model = load_exported(tmp_path / "model")  # loads on the CPU: nothing in the export is tied to the GPU
    assert all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_a_cuda_checkpoint_in_the_finetuning_phase_resumes_at_the_right_step(pair_task, tmp_path, device):
    """The checkpoint holds the fine-tuning phase's fixed gates, read onto the CPU: they must follow the run's device."""
    class Stop(Exception):
        pass

    def stop_at_9(step, metrics):
        if step == 9:
            raise Stop()

    reporter = MemoryReporter(tmp_path / "gpu")
    with pytest.raises(Stop):
        run(_config(pair_task), reporter, progress=stop_at_9)
    state = read_checkpoint(reporter.checkpoints[-1])  # map_location cpu, weights_only
    assert state["step"] == 8 and state["frozen_z"] is not None
    assert state["rng"]["cuda"], "the CUDA generator state is kept with the checkpoint"
    steps = []
    final = run(_config(pair_task, device=device), MemoryReporter(tmp_path / device),
                resume_from=reporter.checkpoints[-1], progress=lambda step, m: steps.append(step))
    assert steps == [9, 10, 11, 12] and final["step"] == 12


def test_bf16_autocast_trains_with_fp32_weights_and_finite_losses(pair_task, tmp_path):
    losses = []
    reporter = MemoryReporter(tmp_path / "bf16")
    run(_config(pair_task, precision="bf16"), reporter, progress=lambda step, m: losses.append(m["loss"]))
    assert len(losses) == 12 and all(math.isfinite(loss) for loss in losses)
    weights = read_checkpoint(reporter.checkpoints[-1])["model"]
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}  # autocast, not a bf16 model


def test_latency_is_measured_on_the_gpu(pair_task, tmp_path):
    final = run(_config(pair_task, latency={"enabled": True}), MemoryReporter(tmp_path / "lat"))
    assert final["latency_ms"] > 0
