"""What data parallelism buys a trial on CPUs: one trial's training steps on 1 vs 2 workers, side by side in one run.

The workers are the loop's own (`JointTrainer` with its rank and world size, gradients all-reduced over gloo), in
processes of their own with one torch thread each, as Ray Train runs them with `--workers-per-trial 2
--cpus-per-worker 1` (Ray's own start-up, which does not change per step, is left out). Each worker takes a batch of
`batch_size`, so 2 workers train on twice the examples per step. Models: the demo's tiny BERT and MiniLM-L6
(RTE <- MNLI-subset, multitask, batch 16, sequence 128 padded).

    python bench/data_parallel.py [--steps 20] [--warmup 3] [--models tiny minilm]
"""
import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def config_of(model: str):
    from raysearch.config import config_from_dict

    tiny = {"tiny": {"architecture": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "intermediate_size": 256}} if model == "tiny" else {}
    return config_from_dict({
        "model": {**tiny, "max_seq_length": 128, "pad_to_max_length": True},
        "target": {"source": str(DATA / "RTE")}, "transfer": {"task": {"source": str(DATA / "MNLI-subset")}, "preset": "multitask"},
        "pruning": {"target_sparsity": 0.6, "warmup_steps": 1000}, "max_steps": 10000, "batch_size": 16, "eval_every": 10000})


def worker(rank: int, world_size: int, model: str, steps: int, warmup: int, port: int, out):
    import datasets
    import torch
    import torch.distributed as dist

    from raysearch.trainer import JointTrainer

    datasets.disable_progress_bars()
    torch.set_num_threads(1)
    if world_size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    trainer = JointTrainer(config_of(model), rank=rank, world_size=world_size)
    for _ in range(warmup):
        trainer.train_step()
    if world_size > 1:
        dist.barrier()
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        out.put(time.perf_counter() - started)


def measure(model: str, world_size: int, steps: int, warmup: int) -> float:
    """Seconds per step of one trial on `world_size` workers."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(rank, world_size, model, steps, warmup, port, out)) for rank in range(world_size)]
    for p in procs:
        p.start()
    seconds = out.get()
    for p in procs:
        p.join()
    return seconds / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["tiny", "minilm"], choices=["tiny", "minilm"])
    args = parser.parse_args()
    print(f"{args.steps} steps after {args.warmup} warm-up steps, batch 16 per worker, one torch thread per worker, "
          f"{os.cpu_count()} CPUs\n")
    print("| model | workers | s/step | steps/s | examples/s | examples/s vs 1 worker |")
    print("| --- | --- | --- | --- | --- | --- |")
    for model in args.models:
        one = measure(model, 1, args.steps, args.warmup)
        two = measure(model, 2, args.steps, args.warmup)
        for workers, seconds in ((1, one), (2, two)):
            examples = 16 * workers / seconds
            print(f"| {model} | {workers} | {seconds:.3f} | {1 / seconds:.2f} | {examples:.1f} | {examples / (16 / one):.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
