"""Memory of a reused trial process: MiniLM trials run one after another in one process, each in a new thread as
Tune runs a reused actor's trials, with and without `raysearch.distributed.worker.release_memory` after each
(Ray left out: docs/PERFORMANCE.md has the same trials under Ray).

Each variant runs in its own process (1 torch thread); the table gives the process's resident memory after each
trial. The trials are the `how_what_when` space's base (RTE <- MNLI-subset, packaged MiniLM-L6), shortened.

    python bench/trial_memory.py [--trials 4] [--steps 20]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the space's data paths are relative to the repository


def measure(trials: int, steps: int, release: bool) -> list[int]:
    import psutil
    import torch

    torch.set_num_threads(1)
    from raysearch.distributed.worker import release_memory
    from raysearch.loop import run
    from raysearch.run_folder import LocalReporter
    from search_spaces import load_space

    space = load_space("how_what_when").with_base([f"max_steps={steps}", f"eval_every={steps // 2}", f"pruning.warmup_steps={steps // 2}",
                                                   f"pruning.finetune_steps={steps // 5}", "target.heldout_test_size=64", "eval_max_examples=64"])
    config = space.trial_config({"transfer.coupling": "soft", "transfer.coupling_strength": 0.01, "transfer.groups.attention": "on",
                                 "transfer.transfer_weight": 1.0, "transfer.transfer_start_step": 0.0, "pruning.target_sparsity": 0.6}, seed=0)

    errors = []

    def trial():
        try:
            with tempfile.TemporaryDirectory() as folder:
                run(config, LocalReporter(folder), threads=1)
        except Exception as e:  # a thread's error would otherwise only be printed
            errors.append(e)
        if release:
            release_memory()

    rss = []
    for _ in range(trials):
        thread = threading.Thread(target=trial)  # a new thread per trial, as Tune's function trainable runs them
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
        rss.append(psutil.Process().memory_info().rss >> 20)
    return rss


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--variant", choices=["kept", "released"], help=argparse.SUPPRESS)  # one measuring process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.trials, args.steps, args.variant == "released")))
        return
    rows = {}
    for variant in ("kept", "released"):  # one after the other: each alone on the machine
        out = subprocess.run([sys.executable, __file__, "--trials", str(args.trials), "--steps", str(args.steps), "--variant", variant],
                             check=True, capture_output=True, text=True, cwd=ROOT).stdout
        rows[variant] = json.loads(out.strip().splitlines()[-1])
    print(f"MiniLM-L6 trials of {args.steps} steps, one after another in one process, each in a new thread; resident memory (MiB) after each")
    print("| after each trial: | " + " | ".join(f"trial {i + 1}" for i in range(args.trials)) + " |")
    print("| --- |" + " --- |" * args.trials)
    print("| memory kept by the allocator | " + " | ".join(map(str, rows["kept"])) + " |")
    print("| release_memory() after each | " + " | ".join(map(str, rows["released"])) + " |")
    print(f"growth from trial 1 to {args.trials}: kept {rows['kept'][-1] - rows['kept'][0]:+d} MiB, "
          f"released {rows['released'][-1] - rows['released'][0]:+d} MiB")


if __name__ == "__main__":
    main()
