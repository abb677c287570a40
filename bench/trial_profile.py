"""Where a study trial's time goes, and study trials per hour on this machine.

Runs the loop of one study trial (packaged MiniLM-L6, a study pair, the study's step budget) in
`--concurrent` processes at once, as the study runs two trials side by side on 2 CPUs, and times
each part: reading the data, tokenising, building the model, a training step without and with the
transfer branch, one evaluation, one checkpoint. Ray's fixed cost per trial comes from
`bench/trial_overhead.py` (`--ray-overhead-s`, measured there). The trial time of a study cell is
put together from the parts and turned into trials per hour (x concurrency).

    python bench/trial_profile.py [--pair sst2_imdb] [--threads 1] [--concurrent 2] [--steps 8]

`--threads 0` leaves torch's default thread count (what every process got before threads were set
from the CPUs a process is given). Works on older checkouts too: it only uses JointTrainer's public
methods, so the same file measures "before" in a worktree of an earlier commit.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PAIRS = {
    "rte_mnli": {"target": {"source": str(DATA / "RTE"), "heldout_test_size": 500},
                 "transfer": {"task": {"source": str(DATA / "MNLI-subset")}}},
    "sst2_imdb": {"target": {"source": str(DATA / "SST-2")}, "target_train_size": 1000,
                  "transfer": {"task": {"source": str(DATA / "IMDB")}}},
}


def measure(pair: str, threads: int, steps: int, seq: int, batch: int, eval_max: int) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    import datasets

    datasets.disable_progress_bars()
    from raysearch import data as data_lib
    from raysearch.config import config_from_dict
    from raysearch.trainer import JointTrainer, load_tasks

    encode_seconds = []
    original_encode = data_lib.encode

    def timed_encode(*args, **kwargs):  # instrumentation only: the same function, timed
        started = time.perf_counter()
        out = original_encode(*args, **kwargs)
        encode_seconds.append(time.perf_counter() - started)
        return out

    data_lib.encode = timed_encode
    out = {"threads": torch.get_num_threads()}
    for preset in ("no_transfer", "multitask"):
        config = config_from_dict({
            "model": {"max_seq_length": seq}, **PAIRS[pair], "transfer": {**PAIRS[pair]["transfer"], "preset": preset},
            "max_steps": 1000, "batch_size": batch, "eval_max_examples": eval_max,
            "pruning": {"target_sparsity": 0.6, "warmup_steps": 100},
        })
        started = time.perf_counter()
        tasks = load_tasks(config)
        load_s = time.perf_counter() - started
        encode_seconds.clear()
        started = time.perf_counter()
        trainer = JointTrainer(config, tasks=tasks)
        build_s = time.perf_counter() - started
        trainer.train_step()  # first step: allocator warm-up
        started = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        step_s = (time.perf_counter() - started) / steps
        started = time.perf_counter()
        trainer.evaluate()
        eval_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            trainer.save_checkpoint(Path(tmp))
            ckpt_s = time.perf_counter() - started
        out[preset] = {"load_s": load_s, "tokenise_s": sum(encode_seconds), "build_s": build_s - sum(encode_seconds),
                       "step_s": step_s, "eval_s": eval_s, "checkpoint_s": ckpt_s}
    return out


def trial_seconds(parts: dict, max_steps: int, eval_every: int, ray_overhead_s: float) -> float:
    evaluations = max_steps // eval_every
    return (ray_overhead_s + parts["load_s"] + parts["tokenise_s"] + parts["build_s"] + max_steps * parts["step_s"]
            + evaluations * (parts["eval_s"] + parts["checkpoint_s"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", choices=list(PAIRS), default="sst2_imdb")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (0: torch's default)")
    parser.add_argument("--concurrent", type=int, default=2, help="processes at once (the study runs 2 trials at a time)")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per preset")
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--eval-max-examples", type=int, default=500)
    parser.add_argument("--max-steps", type=int, default=600, help="study budget the trial time is put together for")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--ray-overhead-s", type=float, default=15.8, help="Ray + raysearch fixed cost per trial (trial_overhead.py)")
    parser.add_argument("--label", default="", help="a name for this configuration in the table")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.pair, args.threads, args.steps, args.seq, args.batch, args.eval_max_examples)))
        return
    command = [sys.executable, __file__, "--child", "--pair", args.pair, "--threads", str(args.threads), "--steps", str(args.steps),
               "--seq", str(args.seq), "--batch", str(args.batch), "--eval-max-examples", str(args.eval_max_examples)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, env=env, cwd=ROOT) for _ in range(args.concurrent)]
    results = []
    for child in children:
        stdout, _ = child.communicate()
        if child.returncode:
            raise SystemExit(f"a measuring process failed (exit {child.returncode})")
        results.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    wall = time.perf_counter() - started
    print(f"{args.label or 'this checkout'}: pair {args.pair}, {args.concurrent} processes at once, "
          f"{results[0]['threads']} torch threads each, seq {args.seq}, batch {args.batch}; measured in {wall:.0f} s")
    print("| preset | load (s) | tokenise (s) | build (s) | step (s) | evaluation (s) | checkpoint (s) | trial (min) | trials/hour |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for preset in ("no_transfer", "multitask"):
        parts = {k: statistics.mean(r[preset][k] for r in results) for k in results[0][preset]}
        seconds = trial_seconds(parts, args.max_steps, args.eval_every, args.ray_overhead_s)
        print(f"| {preset} | {parts['load_s']:.1f} | {parts['tokenise_s']:.1f} | {parts['build_s']:.1f} | {parts['step_s']:.3f} | "
              f"{parts['eval_s']:.1f} | {parts['checkpoint_s']:.2f} | {seconds / 60:.1f} | {args.concurrent * 3600 / seconds:.1f} |")
    print(f"trial = Ray overhead {args.ray_overhead_s} s + load + tokenise + build + {args.max_steps} steps "
          f"+ {args.max_steps // args.eval_every} x (evaluation + checkpoint); trials/hour = {args.concurrent} x 3600 / trial")


if __name__ == "__main__":
    main()
