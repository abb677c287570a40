"""Step time and training memory: dense fine-tuning vs one-branch pruning vs the joint two-branch loop.

Same model (packaged MiniLM-L6), same batch (16) and sequence length (128, fixed padding), RTE as the target
and MNLI-subset as the transfer task (tied, all groups). Each mode runs in its own process so that peak
memory figures do not mix; the table gives ratios to dense.

Training memory = parameters (unique tensors) + the peak growth of resident memory once the steps start
(gradients, optimizer state, activations) on CPU; torch.cuda.max_memory_allocated on GPU.

    python bench/step_time.py [--steps 10] [--warmup 3] [--device cpu|cuda] [--precision fp32|bf16]
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODES = ("dense", "pruning", "joint")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(mode: str, steps: int, warmup: int, device: str, precision: str, seq: int, batch: int) -> dict:
    import datasets
    import torch

    datasets.disable_progress_bars()
    from raysearch.config import config_from_dict
    from raysearch.trainer import JointTrainer

    transfer = {"task": {"source": str(DATA / "MNLI-subset")}, "preset": "multitask"} if mode == "joint" else {}
    config = config_from_dict({
        "model": {"max_seq_length": seq, "pad_to_max_length": True},
        "target": {"source": str(DATA / "RTE")}, "transfer": transfer, "device": device, "precision": precision,
        "max_steps": 1000, "batch_size": batch, "pruning": {"target_sparsity": 0.6, "warmup_steps": 100},
    })
    trainer = JointTrainer(config)
    params = sum(p.numel() * p.element_size() for p in {id(p): p for p in trainer.model.parameters()}.values())
    cuda = trainer.device.type == "cuda"

    def dense_step():
        branch, optimizer = trainer.model.target, trainer.optimizers["weights"]
        branch.train()
        with trainer._autocast():
            loss = branch.loss(trainer.data.target_batch(trainer.step, trainer.device), z=None)  # hooks are no-ops without gates
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.weights, config.max_grad_norm)
        optimizer.step()
        trainer.step += 1

    step = dense_step if mode == "dense" else trainer.train_step
    rss_built = _rss_bytes()  # model, data and tokenizer are resident; nothing of training yet
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    if cuda:
        memory = torch.cuda.max_memory_allocated()
    else:  # parameters + the peak of what the steps allocated on top (grads, optimizer state, activations)
        memory = params + max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_built)
    return {"mode": mode, "step_s": seconds, "memory_bytes": memory, "param_bytes": params, "device": str(trainer.device)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.steps, args.warmup, args.device, args.precision, args.seq, args.batch)))
        return
    rows = []
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, "--mode", mode, *sys.argv[1:]], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    dense = rows[0]
    print(f"MiniLM-L6, batch {args.batch}, seq {args.seq}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"device {dense['device']}, {args.precision}")
    print("| mode | step time (s) | time / dense | training memory (MiB) | memory / dense |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['mode']} | {r['step_s']:.3f} | {r['step_s'] / dense['step_s']:.2f} | "
              f"{r['memory_bytes'] / 2**20:.0f} | {r['memory_bytes'] / dense['memory_bytes']:.2f} |")
    print("targets: pruning/dense <= 1.15, joint/dense <= 2.1, joint memory/dense <= 2.3")


if __name__ == "__main__":
    main()
