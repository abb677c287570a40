"""What a search is asked to do: its trial count, sampler, resources per trial and stages (`launch`'s options)."""
from dataclasses import dataclass, field

from ..errors import UserInputError

# Optuna's TPE, NSGA-II and random sampler; Ray Tune's BasicVariantGenerator for the full grid of categorical
# choices (e.g. the baselines space: every preset x sparsity, on each seed)
# trackers a search can log to -> the module each needs (and the raysearch extra that installs it)
TRACKERS = {"mlflow": "mlflow", "wandb": "wandb"}
SAMPLERS = ("tpe", "nsga2", "random", "grid")


@dataclass
class SearchSettings:
    num_samples: int = 8
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    sampler: str = "tpe"
    seed: int = 0
    max_failures: int = 2  # worker restarts per trial, each from the trial's last checkpoint
    keep_checkpoints: int = 1  # per running trial: what a restart needs
    keep_finished_checkpoints: bool = False  # a finished trial keeps its exported model; its checkpoints go unless asked
    optuna_storage: str | None = None
    # train a configuration the search has trained before, instead of asking the sampler for another (Optuna) or
    # replaying its results (a grid, or a proposal still trained after distinct.MAX_REDRAWS draws)
    rerun_duplicates: bool = False
    repeats: int | None = None  # seeds per configuration; default: the space's `repeats`
    baselines: bool = True  # no_transfer, multitask, sequential first, on the same seeds
    confirm_top: int = 3  # configurations per level re-trained on fresh seeds after the search
    confirm_seeds: int = 3  # fresh seeds of the confirmation stage (0: none)
    callbacks: list[str] = field(default_factory=list)  # TRACKERS to log every trial to (raysearch.distributed.trackers)

    def __post_init__(self):
        if self.num_samples < 1:
            raise UserInputError("--num-samples", f"must be >= 1, got {self.num_samples}", "give a positive trial count")
        if self.workers_per_trial < 1:
            raise UserInputError("--workers-per-trial", f"must be >= 1, got {self.workers_per_trial}", "give a positive worker count")
        if self.cpus_per_worker < 0:
            raise UserInputError("--cpus-per-worker", f"must be >= 0, got {self.cpus_per_worker:g}", "give a non-negative number, e.g. 1")
        g = self.gpus_per_worker
        if g < 0 or (g > 1 and g != int(g)):
            raise UserInputError("--gpus-per-worker", f"{g:g} is neither a fraction in (0, 1] nor a whole number of GPUs",
                                 "give e.g. 0.25 (four workers share a GPU), 1, or 2")
        if self.max_failures < 0:
            raise UserInputError("--max-failures", f"must be >= 0, got {self.max_failures}", "give 0 (no restart) or more")
        for name, flag, least in (("repeats", "--repeats", 1), ("confirm_top", "--confirm-top", 1), ("confirm_seeds", "--confirm-seeds", 0)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < least):
                raise UserInputError(flag, f"must be a whole number >= {least}, got {value!r}", f"give {least} or more")
        for name in self.callbacks:
            if name not in TRACKERS:
                raise UserInputError("--callback", f"unknown tracker {name!r}", f"choose from {', '.join(TRACKERS)}")
        if self.sampler not in SAMPLERS:
            raise UserInputError("--sampler", f"unknown sampler {self.sampler!r}", f"choose one of {', '.join(SAMPLERS)}")
