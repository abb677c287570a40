"""The study's vocabulary (experiments/study.py runs it, experiments/study_report.py reports it): the target/transfer
pairs, the sparsities, the parts of a cell, the profiles and the experiments' names."""
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
RESULTS = HERE / "results"
PAIRS = {
    "sst2_imdb": {"seq": 64, "config": {"target": {"source": str(DATA / "SST-2")}, "target_train_size": 1000,
                                        "transfer": {"task": {"source": str(DATA / "IMDB")}}}},
    "rte_mnli": {"seq": 128, "config": {"target": {"source": str(DATA / "RTE"), "heldout_test_size": 500},
                                        "transfer": {"task": {"source": str(DATA / "MNLI-subset")}}}},
    "mrpc_mnli": {"seq": 128, "config": {"target": {"source": str(DATA / "MRPC")}, "target_train_size": 1000,
                                         "transfer": {"task": {"source": str(DATA / "MNLI-subset")}}}},
}
SPARSITIES = (0.6, 0.8)
PARTS = ("baselines", "search", "rerun")  # the first study's design: `PAIR:SPARSITY` alone runs these
PICK = "pick"  # the staged search (raysearch.distributed.staged), asked for by name
PRESETS = ("no_transfer", "sequential", "multitask")
# cpu: a 2-core CPU, two trials at a time, one torch thread each; full: the same protocol with a GPU-sized budget.
# The step budget (max_steps, sparsity warm-up, fine-tuning steps) is the pair's own, from its pilot curves
# (docs/RESULTS.md, "Pilot"): max_steps where no_transfer at 0.6 had stopped improving.
PROFILES = {
    "cpu": {"batch": 16, "eval_every": 50, "eval_max_examples": 1000, "search_trials": 12, "seeds": [0, 1, 2],
            # successive halving over seeds (issue 27, item 5): 3 + 6 + 3 x 3 = 18 trainings, about 2 h for sst2_imdb
            "pick": {"configurations": 6, "repeats": 1, "confirm_top": 1, "confirm_seeds": 3},
            # sst2_imdb from its pilot; rte_mnli's pilot stayed at chance (docs/RESULTS.md), so its cells move to
            # mrpc_mnli. Its pilot: dense plateaus (0.71-0.75 dev) from step 150; no_transfer at 0.6 stays at the
            # majority class (0.68) through 600 steps, so a longer budget buys it nothing the curves show
            "budget": {"sst2_imdb": {"max_steps": 400, "warmup": 200, "finetune": 80},
                       "rte_mnli": {"max_steps": 400, "warmup": 200, "finetune": 80},
                       "mrpc_mnli": {"max_steps": 400, "warmup": 200, "finetune": 80}}},
    "full": {"batch": 32, "eval_every": 100, "eval_max_examples": 2000, "search_trials": 32, "seeds": [0, 1, 2],
             "pick": {"configurations": 16, "repeats": 2, "confirm_top": 3, "confirm_seeds": 3},
             # sst2_imdb from its GPU pilot (docs/RESULTS-full.md): no_transfer reaches 0.6 at step ~700 and its dev
             # stays flat from there to 3000; the other pairs' budgets are placeholders until their pilots have run
             "budget": {"sst2_imdb": {"max_steps": 1000, "warmup": 600, "finetune": 200},
                        "rte_mnli": {"max_steps": 2000, "warmup": 600, "finetune": 400},
                        "mrpc_mnli": {"max_steps": 2000, "warmup": 600, "finetune": 400}}},
}


def experiment_name(pair: str, sparsity: float | None, part: str, distill: bool = False) -> str:
    name = f"{part}-{pair}" if sparsity is None else f"{part}-{pair}-{sparsity}"
    return name + "-distill" if distill else name
