"""`raysearch export`: models out of a finished (or resumed) search, each with a card saying what it is.

    raysearch export runs/rte-hww --out shipped/          # the dev-selected Pareto front
    raysearch export runs/rte-hww 1a2b3c4d --out shipped/  # chosen trials

Each finished trial exported its pruned model into `EXPERIMENT/models/<trial id>/`; this copies it (or, for a trial
that has no export but still has its checkpoints, re-creates it from the newest one) into OUT/<trial id>/ and writes
`card.json` beside it: the trial's config, dev/test quality, sparsity, parameters (the encoder's prunable ones, and
all of them, embeddings included), bytes on disk and CPU latency. The folders load with transformers' Auto classes
once `raysearch.hf` is imported. `--onnx` adds `model.onnx`, checked against PyTorch, and its CPU latency.
"""
import json
from pathlib import Path

from .config import config_from_dict
from .errors import UserInputError
from .experiment import EXPORT_CARD, Folder, read_meta, trial_config_file, trial_model_dir
from .model_card import card_facts, latency_summary, write_model_card

CARD = "card.json"
CARD_METRICS = ("target_dev", "target_test", "best_target_dev", "best_step", "exact_sparsity", "remaining_params", "full_params")


def export_models(experiment: str, trial_ids: list[str], out: str | Path, latency_batch: int = 1, latency_seq: int = 128,
                  onnx: bool = False) -> list[dict]:
    """Copy or re-create the models of `trial_ids` (default: the dev-selected front) into OUT; returns their cards."""
    from analysis import analyze_experiments
    from analysis.frames import trial_frame

    folder, out = Folder(experiment), Path(out)
    trials = trial_frame([experiment]).set_index("trial_id")
    if not trial_ids:
        trial_ids = list(analyze_experiments([experiment]).front["trial_id"])
    unknown = [t for t in trial_ids if t not in trials.index]
    if unknown:
        raise UserInputError("TRIAL_ID", f"{', '.join(unknown)} not in {experiment}", f"choose from {', '.join(trials.index)}")
    unfinished = [t for t in trial_ids if not trials.loc[t, "complete"]]
    if unfinished:
        raise UserInputError("TRIAL_ID", f"{', '.join(unfinished)} has not finished", "resume the experiment first, or pick a finished trial")
    taken = [str(out / t) for t in trial_ids if (out / t).exists()]
    if taken:  # never overwrite what a user has
        raise UserInputError("--out", f"{', '.join(taken)} already exists", "choose another --out, or move those folders away")
    cards = []
    for trial_id in trial_ids:
        target = out / trial_id
        if folder.exists(trial_model_dir(trial_id)):
            folder.download(trial_model_dir(trial_id), target)
        else:
            _recreate(experiment, trial_id, target)
        extra = _onnx(target, latency_seq) if onnx else {}
        cards.append(_write_card(folder, trials.loc[trial_id], trial_id, target, latency_batch, latency_seq, extra))
    return cards


def _recreate(experiment: str, trial_id: str, target: Path):
    """Export again from the trial's newest checkpoint (an experiment from before trials exported, or kept checkpoints)."""
    from .config import config_from_dict
    from .loop import JointTrainer, export_target, newest_intact_checkpoint

    train_runs = Path(read_meta(experiment).get("train_storage", f"{experiment}/train_runs")) / f"trial_{trial_id}"
    checkpoints = sorted(train_runs.glob("checkpoint_*")) if "://" not in str(train_runs) else []
    directory, state = newest_intact_checkpoint(checkpoints)
    if state is None:
        raise UserInputError(trial_id, "has no exported model and no checkpoint to export from",
                             "re-run it with `raysearch train EXPERIMENT/trial_configs/ID.json`")
    config = config_from_dict(json.loads(Folder(experiment).read_text(trial_config_file(trial_id))))
    trainer = JointTrainer(config)
    trainer.load_state_dict(state, source=str(directory))
    card = export_target(trainer, target)
    (target / EXPORT_CARD).write_text(json.dumps({k: v for k, v in card.items() if k != "export_dir"}, indent=1))


def _onnx(target: Path, seq: int) -> dict:
    from .exported import export_onnx, load_exported

    return export_onnx(load_exported(target), target, seq)


def _write_card(folder: Folder, trial, trial_id: str, target: Path, batch: int, seq: int, extra: dict) -> dict:
    export = json.loads((target / EXPORT_CARD).read_text()) if (target / EXPORT_CARD).is_file() else {}
    config = json.loads(folder.read_text(trial_config_file(trial_id))) if folder.exists(trial_config_file(trial_id)) else None
    card = {"trial_id": trial_id, "experiment": folder.path, **{m: _plain(trial.get(m)) for m in CARD_METRICS},
            "parameters": export.get("export_parameters"), "encoder_prunable_parameters": export.get("export_prunable_parameters"),
            "bytes_on_disk": sum(p.stat().st_size for p in target.rglob("*") if p.is_file()),
            "export_dev_agreement": export.get("export_dev_agreement"),
            **extra, "config": config}
    latency = cpu_latency(target, batch, seq)
    card[f"cpu_latency_ms_batch{batch}_seq{seq}"] = round(latency["median_ms"], 3)
    card["cpu_latency"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in latency.items()}
    (target / CARD).write_text(json.dumps(card, indent=1))
    if config is not None:
        facts = card_facts(config_from_dict(config), {**{m: card.get(m) for m in CARD_METRICS}, **export})
        write_model_card(target, facts, latency)
    return card


def cpu_latency(model_dir: str | Path, batch: int = 1, seq: int = 128, passes: int = 30) -> dict:
    """CPU forward times of an exported model: median and spread over `passes` (model_card.latency_summary)."""
    from .exported import latency_samples, load_exported

    return latency_summary(latency_samples(load_exported(model_dir), batch, seq, warmup=3, repeats=passes), batch, seq)


def _plain(value):
    """A frame value as JSON has it (numpy scalars and NaN made plain)."""
    if value is None:
        return None
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value
