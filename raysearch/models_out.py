"""`raysearch export`: models out of a finished (or resumed) search or a `raysearch train` run, each with a card.

    raysearch export runs/rte-hww --out shipped/          # the dev-selected Pareto front
    raysearch export runs/rte-hww 1a2b3c4d --out shipped/  # chosen trials
    raysearch export runs/my-train-run --out shipped/     # a train run's model (OUT/my-train-run)

Each finished trial exported its pruned model into `EXPERIMENT/models/<trial id>/`; this copies it (or, for a trial
that has no export but still has its checkpoints, re-creates it from the newest one) into OUT/<trial id>/ and writes
`card.json` beside it: the trial's config, dev/test quality, sparsity, parameters (the encoder's prunable ones, and
all of them, embeddings included), bytes on disk and CPU latency (median and spread), and the model card README.md.
The folders load with transformers' Auto classes (`trust_remote_code=True`, or `import raysearch.hf` first). `--onnx`
adds `model.onnx`, checked against PyTorch, and its CPU latency.
"""
import json
import shutil
from pathlib import Path

from .config import config_from_dict
from .errors import UserInputError
from .experiment import EXPORT_CARD, Folder, read_meta, trial_config_file, trial_model_dir
from .model_card import card_facts, latency_summary, write_model_card
from .run_folder import MODEL_DIR, final_metrics, is_run_folder, run_config
from .reporting import EXPORT_DIR

CARD = "card.json"
LATENCY_PASSES = 30
CARD_METRICS = ("target_dev", "target_test", "best_target_dev", "best_step", "exact_sparsity", "remaining_params", "full_params")


def export_models(source: str, trial_ids: list[str], out: str | Path, latency_batch: int = 1, latency_seq: int = 128,
                  onnx: bool = False) -> list[dict]:
    """Copy or re-create the models of `trial_ids` of an experiment (default: its dev-selected front), or the model of a
    `raysearch train` run folder, into OUT/<trial id or run name>; returns their cards. A model whose export fails
    leaves nothing in OUT."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserInputError("--out", f"{out} is a file", "give a folder: each model goes into a folder of its own inside it")
    if is_run_folder(Path(source)):
        return [_export_run(Path(source), trial_ids, out, latency_batch, latency_seq, onnx)]
    from analysis import analyze_experiments
    from analysis.frames import trial_frame

    folder = Folder(source)
    read_meta(source)  # a folder that is neither an experiment nor a run fails here, in one line
    trials = trial_frame([source]).set_index("trial_id")
    if not trial_ids:
        trial_ids = list(analyze_experiments([source]).front["trial_id"])
    unknown = [t for t in trial_ids if t not in trials.index]
    if unknown:
        raise UserInputError("TRIAL_ID", f"{', '.join(unknown)} not in {source}", f"choose from {', '.join(trials.index)}")
    unfinished = [t for t in trial_ids if not trials.loc[t, "complete"]]
    if unfinished:
        raise UserInputError("TRIAL_ID", f"{', '.join(unfinished)} has not finished", "resume the experiment first, or pick a finished trial")
    _refuse_taken(out, trial_ids)
    cards = []
    for trial_id in trial_ids:
        def fill(target: Path, trial_id=trial_id):
            if folder.exists(trial_model_dir(trial_id)):
                folder.download(trial_model_dir(trial_id), target)
            else:
                _recreate(source, trial_id, target)
            config = json.loads(folder.read_text(trial_config_file(trial_id))) if folder.exists(trial_config_file(trial_id)) else None
            final = {m: _plain(trials.loc[trial_id].get(m)) for m in CARD_METRICS}  # its export.json has the export's facts
            return _write_card(target, trial_id, folder.path, config, final, latency_batch, latency_seq, onnx)
        cards.append(_built(out / trial_id, fill))
    return cards


def _export_run(run: Path, names: list[str], out: Path, latency_batch: int, latency_seq: int, onnx: bool) -> dict:
    """The exported model of a `raysearch train` run folder, into OUT/<run folder name>."""
    from .exported import META_FILE

    if names:
        raise UserInputError("TRIAL_ID", f"{run} is a train run: it has one model and no trials", "leave the trial ids out")
    if not (run / MODEL_DIR / META_FILE).is_file():
        raise UserInputError(str(run), "has no exported model yet (the run has not finished)", f"finish it: raysearch train --resume --output-dir {run}")
    _refuse_taken(out, [run.name])
    final = final_metrics(run)

    def fill(target: Path):
        shutil.copytree(run / MODEL_DIR, target)
        return _write_card(target, run.name, str(run), run_config(run).to_dict(), final, latency_batch, latency_seq, onnx)
    return _built(out / run.name, fill)


def _refuse_taken(out: Path, names: list[str]):
    taken = [str(out / name) for name in names if (out / name).exists()]
    if taken:  # never overwrite what a user has
        raise UserInputError("--out", f"{', '.join(taken)} already exists", "choose another --out, or move those folders away")


def _built(target: Path, fill) -> dict:
    """`fill(folder)` in a hidden folder beside `target`, renamed to `target` once whole: a failure leaves nothing."""
    partial = target.parent / f".{target.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        card = fill(partial)
        partial.rename(target)
        return card
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _recreate(experiment: str, trial_id: str, target: Path):
    """Export again from the trial's newest checkpoint (an experiment from before trials exported, or kept checkpoints)."""
    from .config import config_from_dict
    from .checkpoints import newest_intact_checkpoint
    from .loop import export_target
    from .trainer import JointTrainer

    train_runs = Path(read_meta(experiment).get("train_storage", f"{experiment}/train_runs")) / f"trial_{trial_id}"
    checkpoints = sorted(train_runs.glob("checkpoint_*")) if "://" not in str(train_runs) else []
    directory, state = newest_intact_checkpoint(checkpoints)
    if state is None:
        stored = Folder(experiment).exists(trial_config_file(trial_id))
        raise UserInputError(trial_id, "has no exported model and no checkpoint to export from",
                             f"re-run it with `raysearch train {experiment}/{trial_config_file(trial_id)}`" if stored
                             else "choose a trial that finished with an exported model")
    config = config_from_dict(json.loads(Folder(experiment).read_text(trial_config_file(trial_id))))
    trainer = JointTrainer(config)
    trainer.load_state_dict(state, source=str(directory))
    card = export_target(trainer, target)
    (target / EXPORT_CARD).write_text(json.dumps({k: v for k, v in card.items() if k != EXPORT_DIR}, indent=1))


def _onnx(model, target: Path, seq: int) -> dict:
    from .exported import export_onnx

    return export_onnx(model, target, seq)


def _write_card(target: Path, trial_id: str, source: str, config: dict | None, final: dict, batch: int, seq: int, onnx: bool) -> dict:
    """`final`: the trial's final metrics; the export's own facts (`export_*`) come from the folder's export.json, or
    from `final` (a train run keeps them there)."""
    from .exported import latency_samples, load_exported

    export = json.loads((target / EXPORT_CARD).read_text()) if (target / EXPORT_CARD).is_file() else {
        k: v for k, v in final.items() if k.startswith("export_")}
    final = {m: final.get(m) for m in CARD_METRICS}
    try:
        model = load_exported(target)
    except Exception as e:  # a truncated weights file, a damaged config: say which folder, and how to get it back
        raise UserInputError(str(target.name), f"its exported model cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0][:100]})",
                             "export it again from its run or experiment (raysearch export re-creates it from a checkpoint)") from None
    extra = _onnx(model, target, seq) if onnx else {}
    latency = latency_summary(latency_samples(model, batch, seq, warmup=3, repeats=LATENCY_PASSES), batch, seq)
    card = {"trial_id": trial_id, "experiment": source, **final,
            "parameters": export.get("export_parameters"), "encoder_prunable_parameters": export.get("export_prunable_parameters"),
            "bytes_on_disk": sum(p.stat().st_size for p in target.rglob("*") if p.is_file()),
            "export_dev_agreement": export.get("export_dev_agreement"),
            f"cpu_latency_ms_batch{batch}_seq{seq}": round(latency["median_ms"], 3),
            "cpu_latency": {k: round(v, 3) if isinstance(v, float) else v for k, v in latency.items()}, **extra, "config": config}
    (target / CARD).write_text(json.dumps(card, indent=1))
    if config is not None:
        write_model_card(target, card_facts(config_from_dict(config), {**final, **export}), latency)
    return card


def _plain(value):
    """A frame value as JSON has it (numpy scalars and NaN made plain)."""
    if value is None:
        return None
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value
