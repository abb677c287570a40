"""Command line: raysearch train | spaces | launch | resume | status | jobs | analyze | export."""
import argparse
import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path

import yaml

from .errors import TrialConfigError, UserInputError
from .run_folder import CONFIG_FILE, FINAL_METRICS, MODEL_DIR, RUN_MARKER, is_run_folder

def _finished_or_checkpointed(path: Path) -> bool:
    from .reporting import checkpoints_in

    return bool(checkpoints_in(path)) or (path / MODEL_DIR).exists() or (path / FINAL_METRICS).exists()


def _check_experiment_name(name: str):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name) or ".." in name:
        raise UserInputError("--name", f"{name!r} is not a plain folder name", "use letters, digits, '.', '_' and '-' (no '/' or '..')")


def _check_output_dir(out: Path, resume: bool):
    """Where a run may write: a new or empty folder, or (with --resume) a run with a checkpoint. A folder of a
    run that stopped before its first checkpoint may be started afresh; a folder of the user's own, never."""
    if out.is_symlink() and not out.exists():
        raise UserInputError("--output-dir", f"{out} is a symlink that leads nowhere (or to itself)", "give a real folder")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and existing != out and not existing.is_dir():
        raise UserInputError("--output-dir", f"{existing} is a file, so {out} cannot be made", "give a folder")
    if existing is not None and existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError("--output-dir", f"{existing} cannot be written by this user", "give a folder you can write to")
    if out.exists() and not out.is_dir():
        raise UserInputError("--output-dir", f"{out} is a file", "give a folder (new, empty, or a run's)")
    if resume:
        return
    if out.is_dir() and any(out.iterdir()):
        if not is_run_folder(out):
            raise UserInputError("--output-dir", f"{out} holds files that are not a raysearch run", "give a new or empty folder")
        if _finished_or_checkpointed(out):
            raise UserInputError("output_dir", f"{out} already holds a run", "pass --resume to continue it, or choose another --output-dir")


def _start_afresh(out: Path):
    """Keep the metrics of a run that stopped before its first checkpoint beside the new run's (nothing is lost)."""
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        metrics.replace(out / f"metrics.stopped-{int(metrics.stat().st_mtime)}.jsonl")


def _config_changes(before: dict, after: dict, prefix: str = "") -> dict:
    """{dotted key: [before, after]} for every setting that differs."""
    changes = {}
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes.update(_config_changes(a, b, f"{prefix}{key}."))
        elif a != b:
            changes[f"{prefix}{key}"] = [a, b]
    return changes


def cmd_train(args) -> int:
    from tqdm import tqdm

    from .config import load_config
    from .loop import available_cpus, newest_intact_checkpoint, preflight, run
    from .reporting import LocalReporter, checkpoints_in

    if args.threads is not None and args.threads < 1:
        raise UserInputError("--threads", f"must be >= 1, got {args.threads}", "give the number of CPUs this run may use")
    if args.config is None:  # a run is resumed by its folder alone: the config it started with is in it
        if not (args.resume and args.output_dir):
            raise UserInputError("config", "no config file given", "give a YAML config, or --resume --output-dir RUN to continue a run")
        args.config = str(Path(args.output_dir) / CONFIG_FILE)
    config = load_config(args.config, args.set)
    if args.output_dir:
        config.output_dir = args.output_dir
    out = Path(config.output_dir)
    _check_output_dir(out, args.resume)
    resume_from, resume_state = None, None
    if args.resume:
        resume_from, resume_state = newest_intact_checkpoint(checkpoints_in(out), warn=lambda line: print(line, file=sys.stderr))
        if resume_from is None and (out / FINAL_METRICS).is_file():
            raise UserInputError("--resume", f"{out} finished and its checkpoints were removed", "start a new --output-dir "
                                 "(a run started with --keep-checkpoints can be extended later)")
        if resume_from is None:
            raise UserInputError("--resume", f"no checkpoint in {out}/checkpoints", "run without --resume, or give the run's --output-dir")
    tasks = preflight(config)  # data, model and device errors surface here, before anything is written
    created = not out.exists()
    if resume_from is None:
        _start_afresh(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / RUN_MARKER).write_text(json.dumps({"started": True}))
        except OSError as e:  # a folder this user may not write (root passes os.access, not every file system)
            raise UserInputError("--output-dir", f"cannot write {out} ({e.strerror})", "give a folder you can write to") from None
        (out / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    else:
        _record_changes(out, resume_state, config)  # refuses a change of the model's shape
    reporter = LocalReporter(out)

    start = int(resume_from.name.split("_")[-1]) if resume_from else 0
    bar = tqdm(total=config.max_steps, initial=start, desc="train", unit="step", disable=args.quiet)

    def progress(step, m):  # tqdm shows the ETA; the postfix the loss, the sparsity and the latest dev
        bar.update(1)
        if step % 5 == 0 or step == config.max_steps:
            sparsity, dev = m.get("target_expected_sparsity"), reporter.last_metrics.get("target_dev")
            bar.set_postfix(loss=f"{m['loss']:.3f}", **({"sparsity": f"{sparsity:.3f}"} if sparsity is not None else {}),
                            **({"dev": f"{dev:.4f}"} if dev is not None else {}))

    threads = args.threads if args.threads is not None else available_cpus()
    try:
        final = run(config, reporter, resume_from=resume_from, export_dir=out / MODEL_DIR, progress=progress, tasks=tasks, threads=threads)
    except BaseException:
        if created and not checkpoints_in(out):  # a folder this command made and nothing worth keeping in it
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    bar.close()
    (out / FINAL_METRICS).write_text(json.dumps(final, indent=2))
    if not args.keep_checkpoints:  # finished: the model and results stay, the checkpoints (hundreds of MB) go
        import shutil

        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    summary = {k: final[k] for k in ("step", "target_dev", "target_test", "best_target_dev", "exact_sparsity", "remaining_params",
                                     "export_parameters", "export_size_bytes", "export_dev_agreement") if k in final}
    print(json.dumps(summary, indent=2))
    kept = f"{out}/checkpoints/, " if args.keep_checkpoints else ""
    print(f"wrote {out}/metrics.jsonl, {kept}{out}/model/ (exported pruned model, its card README.md), {out}/{FINAL_METRICS}")
    return 0


# settings that decide the shapes in a checkpoint: a resume cannot change them
SHAPE_SETTINGS = ("model.", "pruning.structures", "transfer.coupling", "transfer.groups", "transfer.preset", "transfer.task.",
                  "target.num_labels", "distill.enabled")


def _record_changes(out: Path, state: dict, config):
    """A resume with other settings than the checkpoint's: refuse a change of the model's shape; otherwise say so,
    keep the record in config_changes.jsonl, and let config.yaml describe the run as it now continues."""
    changes = _config_changes(state["config"], config.to_dict())
    shape = {key: values for key, values in changes.items() if key.startswith(SHAPE_SETTINGS)}
    if shape:
        key, (a, b) = next(iter(shape.items()))
        raise UserInputError("--resume", f"the checkpoint's run has {key} {a!r}, this config {b!r}: a resume cannot change the model",
                             "resume with the config the run was started with (its config.yaml), or start a new --output-dir")
    if not changes:
        return
    shown = ", ".join(f"{key} {a!r} -> {b!r}" for key, (a, b) in changes.items())
    print(f"raysearch: resuming at step {state['step']} with changed settings: {shown}", file=sys.stderr)
    with (out / "config_changes.jsonl").open("a") as f:
        f.write(json.dumps({"step": state["step"], "changes": changes}) + "\n")
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def cmd_spaces(args) -> int:
    from search_spaces import list_spaces

    for space in list_spaces():
        print(f"{space['name']:<16} {space['description']}")
    print("\nor pass your own YAML file (see search_spaces/*.yaml for the format)")
    return 0


def _settings(args):
    from .distributed.settings import SearchSettings

    return SearchSettings(num_samples=args.num_samples, workers_per_trial=args.workers_per_trial, cpus_per_worker=args.cpus_per_worker,
                          gpus_per_worker=args.gpus_per_worker, sampler=args.sampler, seed=args.seed, optuna_storage=args.optuna_storage,
                          max_failures=args.max_failures, keep_finished_checkpoints=args.keep_checkpoints,
                          rerun_duplicates=args.rerun_duplicates, repeats=args.repeats, baselines=not args.no_baselines,
                          confirm_top=args.confirm_top, confirm_seeds=args.confirm_seeds, callbacks=list(args.callback))


def cmd_launch(args) -> int:
    import time

    from search_spaces import load_space

    space = load_space(args.space).with_base(args.set)
    settings = _settings(args)
    if settings.sampler == "grid":
        space.tune_param_space(grid=True)  # a space the grid cannot cover fails here, before Ray starts
    storage = args.storage_path if "://" in args.storage_path else str(Path(args.storage_path).expanduser().resolve())
    name = args.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    _check_experiment_name(name)
    from .experiment import experiment_path, holds_experiment, tune_has_saved

    path = experiment_path(storage, name)
    if holds_experiment(path) and tune_has_saved(path):  # before Ray starts (a launch that died before Tune's
        # first save has nothing to resume: it is launched again in the same folder)
        raise UserInputError("--name", f"{path} already holds an experiment", "resume it with `raysearch resume PATH`, or choose another --name")
    if args.submit:
        from .distributed import jobs
        from .redact import has_password

        if settings.optuna_storage and has_password(settings.optuna_storage):
            # a job's command line is shown to every dashboard user
            raise UserInputError("--optuna-storage", "a password in the URL would be shown in the job's command line on the dashboard",
                                 "give the URL without it and let the database driver find it on the cluster "
                                 "(PGPASSWORD or ~/.pgpass for PostgreSQL, a MySQL option file), or launch without --submit")

        argv = ["launch", space.source or args.space, "--address", "auto", "--name", name, "--storage-path", storage,
                "--num-samples", str(settings.num_samples), "--workers-per-trial", str(settings.workers_per_trial),
                "--cpus-per-worker", str(settings.cpus_per_worker), "--gpus-per-worker", str(settings.gpus_per_worker),
                "--sampler", settings.sampler, "--seed", str(settings.seed), "--max-failures", str(settings.max_failures)]
        argv += ["--keep-checkpoints"] if settings.keep_finished_checkpoints else []
        argv += ["--rerun-duplicates"] if settings.rerun_duplicates else []
        argv += ["--repeats", str(settings.repeats)] if settings.repeats else []
        argv += ["--no-baselines"] if not settings.baselines else []
        argv += ["--confirm-top", str(settings.confirm_top), "--confirm-seeds", str(settings.confirm_seeds)]
        argv += ["--verbose"] if args.verbose else []
        argv += [x for name in settings.callbacks for x in ("--callback", name)]
        argv += [x for kv in args.set for x in ("--set", kv)]
        if settings.optuna_storage:
            argv += ["--optuna-storage", settings.optuna_storage]
        job_id = jobs.submit(argv, name, storage, path, args.dashboard, space.name)
        print(f"submitted job {job_id}; experiment {path}")
        print(f"dashboard: {args.dashboard}  (resume later with: raysearch resume --job {job_id})")
        return 0
    from .distributed.search import open_optuna_storage
    from .distributed.trackers import check_installed

    check_installed(settings.callbacks)
    open_optuna_storage(settings.optuna_storage)  # a storage that cannot be opened fails here, before Ray starts
    return _run_search(args.address, lambda search: search.launch(space, settings, storage, name), path, args.verbose)


def _run_search(address, body, path, verbose: bool) -> int:
    import ray

    from .distributed import search
    from .distributed.cluster import init_ray
    from .distributed.quiet import chatter_hidden
    from .distributed.status import format_table, trial_table

    with chatter_hidden(verbose):
        init_ray(address, verbose)
        try:
            body(search)
        finally:
            ray.shutdown()
    frame = trial_table(path)
    print(format_table(frame))
    print(f"experiment: {path}  (status: raysearch status {path})")
    failed_rows = frame[frame["status"] == "ERROR"] if len(frame) else frame
    errors = {row["trial_id"]: TrialConfigError.found_in(row.get("error")) for _, row in failed_rows.iterrows()}
    invalid = sorted(t for t, line in errors.items() if line)
    if invalid:  # a resume would fail the same way: the fix is in the space or the base config
        print(f"{len(invalid)} trial(s) failed on their configuration: {', '.join(invalid)} ({errors[invalid[0]]}); "
              "fix the space or --set and launch again", file=sys.stderr)
    retried = sorted(t for t, line in errors.items() if not line)
    if retried:  # the search ran, but not as asked: say so in the exit status too
        print(f"{len(retried)} trial(s) failed: {', '.join(retried)}; their errors are in {path}/trial_errors/; "
              f"`raysearch resume {path}` retries them from their last checkpoints", file=sys.stderr)
    code = 1 if errors else 0
    if "://" in path:
        print(f"analyse it with: raysearch analyze {path} --out DIR")
        return code
    from analysis import analyze_experiments, write_outputs

    try:
        result = analyze_experiments([path])
    except UserInputError as e:
        print(f"no analysis: {e}")
        return code
    written = write_outputs(result, Path(path) / "analysis")
    _print_front(result)
    print(f"analysis: {written['report.md']} (and the frames and plots beside it)")
    from analysis.pick import summary_lines

    for line in summary_lines(result.verdicts or []):  # the verdict and the picked model come last
        print(line)
    return code


def _print_front(result):
    from analysis.frames import coupled_groups

    quality = result.objectives[0][0]
    print(f"Pareto front of {len(result.trials)} trials ({quality} up, remaining parameters down):")
    for _, row in result.front.iterrows():
        how = row["preset"] if row["preset"] != "searched" else row["coupling"]
        model = row.get("export_dir")
        print(f"  {row['trial_id']}  sparsity {row['exact_sparsity']:.3f}  {quality} {row[quality]:.4f}  {how}  "
              f"groups {','.join(coupled_groups(row)) or '-'}" + (f"  model {model}" if isinstance(model, str) else ""))


def cmd_resume(args) -> int:
    if bool(args.path) == bool(args.job):
        raise UserInputError("resume", "needs exactly one of PATH or --job JOB_ID", "give the experiment folder or the job id")
    path = args.path
    if args.job:
        from .distributed import jobs

        path = jobs.experiment_of_job(args.job, args.dashboard)
        print(f"job {args.job}: experiment {path}")
    from .experiment import read_meta
    from .redact import check_storage_for_resume

    meta = read_meta(path)  # fails clearly before Ray starts
    check_storage_for_resume((meta.get("settings") or {}).get("optuna_storage"), args.optuna_storage)
    from .distributed.status import format_table, requested_trials, trial_table

    frame, requested = trial_table(path), requested_trials(meta)
    if len(frame) >= requested and (frame["status"] == "TERMINATED").all():
        print(format_table(frame))
        print(f"{path} is finished: {len(frame)} of {requested} trials done, nothing to resume (analyse it with `raysearch analyze`)")
        return 0
    if args.submit:
        from .distributed import jobs

        from .redact import has_password

        if args.optuna_storage and has_password(args.optuna_storage):  # a job's command line is shown to every dashboard user
            raise UserInputError("--optuna-storage", "a password in the URL would be shown in the job's command line on the dashboard",
                                 "let the database driver find it on the cluster (PGPASSWORD, ~/.pgpass), or resume without --submit")
        previous = args.job or (jobs.recorded_job(path) or {}).get("job_id")
        argv = ["resume", path, "--address", "auto"] + (["--verbose"] if args.verbose else [])
        argv += ["--optuna-storage", args.optuna_storage] if args.optuna_storage else []
        job_id = jobs.resubmit(path, previous, args.dashboard, argv)
        print(f"submitted job {job_id} resuming {path}" + (f" (the search of job {previous})" if previous else ""))
        print(f"follow it with: raysearch status {path}")
        return 0
    return _run_search(args.address, lambda search: search.resume(path, args.optuna_storage), path, args.verbose)


def cmd_export(args) -> int:
    from .models_out import export_models

    cards = export_models(args.experiment, args.trial_ids, args.out, args.latency_batch, args.latency_seq, args.onnx)
    for card in cards:
        latency = card["cpu_latency"]
        print(f"{card['trial_id']}: {Path(args.out) / card['trial_id']}  sparsity {card['exact_sparsity']:.3f}  "
              f"target_dev {card['target_dev']:.4f}  parameters {card['parameters']:,} (encoder prunable {card['encoder_prunable_parameters']:,})  "
              f"{card['bytes_on_disk'] / 1e6:.1f} MB  CPU {latency['median_ms']:.1f} ms (quartiles {latency['p25_ms']:.1f}-{latency['p75_ms']:.1f})"
              + (f"  (ONNX: {card['onnx_cpu_latency_ms']:.1f} ms, max logit diff {card['onnx_max_logit_diff']:.1e})" if args.onnx else ""))
    print("load one with: AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True) (its README.md says more)")
    return 0


def cmd_jobs(args) -> int:
    import pandas as pd

    from .distributed import jobs

    rows = jobs.list_searches(args.dashboard)
    if not rows:
        print(f"no raysearch searches among the jobs at {args.dashboard}")
        return 0
    print(pd.DataFrame(rows).to_string(index=False))
    print("resume one with: raysearch resume --job JOB_ID --dashboard DASHBOARD --address ADDRESS")
    return 0


def cmd_status(args) -> int:
    from .distributed import jobs
    from .distributed.status import activity_line, format_table, trial_table
    from .experiment import EXPERIMENT_FILE, Folder

    if bool(args.path) == bool(args.job):
        raise UserInputError("status", "needs exactly one of PATH or --job JOB_ID", "give the experiment folder or the job id")
    path = args.path or jobs.experiment_of_job(args.job, args.dashboard)
    recorded = {"job_id": args.job, "dashboard": args.dashboard} if args.job else jobs.recorded_job(path)
    job_status = None
    if recorded:  # a search submitted as a Ray Job: what the job is doing decides what the trials' states mean
        try:
            job_status = str(jobs.job_info(recorded["job_id"], recorded["dashboard"]).status.value)
        except UserInputError:
            job_status = "unknown (the dashboard does not answer)"
    folder = Folder(path)
    if recorded and not folder.exists(EXPERIMENT_FILE):
        print(f"job {recorded['job_id']} is {job_status}: submitted, and it has not written its experiment {path} yet"
              + ("" if job_status in ("PENDING", "RUNNING") else f" (its output: ray job logs {recorded['job_id']})"))
        return 0
    frame = trial_table(path)
    stopped = recorded is not None and job_status in jobs.HALTED
    if stopped and len(frame):  # Tune's saved state still says RUNNING for what the stopped job was doing
        frame = frame.assign(status=frame["status"].replace({"RUNNING": "STOPPED", "PENDING": "STOPPED"}))
    print(format_table(frame))
    if stopped:
        print(f"the search's job {recorded['job_id']} is {job_status}: nothing is running; continue it with "
              f"`raysearch resume {path} --submit --dashboard {recorded['dashboard']}` (or without --submit, here)")
        return 0
    if job_status:
        print(f"job {recorded['job_id']}: {job_status}")
    line = activity_line(frame, path)
    if line:
        print(line)
    return 0


def cmd_analyze(args) -> int:
    from analysis import analyze_experiments, write_outputs

    objectives = None
    if args.objective:
        objectives = []
        for spec in args.objective:
            column, _, mode = spec.partition(":")
            if mode not in ("max", "min"):
                raise UserInputError("--objective", f"{spec!r} has no direction", "write COLUMN:max or COLUMN:min, e.g. target_dev:max")
            objectives.append((column, mode))
    result = analyze_experiments(args.experiments, objectives, sets=args.sets, width=args.bin_width)
    written = write_outputs(result, args.out)
    _print_front(result)
    print(f"wrote {len(written)} files to {args.out} (report: {written['report.md']})")
    return 0


VERBOSE_HELP = "also show Ray's, Tune's and Optuna's own start-up lines and notices (default: raysearch's lines only)"


def build_parser() -> argparse.ArgumentParser:
    from .distributed.jobs import DEFAULT_DASHBOARD
    from .distributed.settings import TRACKERS

    parser = argparse.ArgumentParser(prog="raysearch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run one configuration locally")
    train.add_argument("config", nargs="?", help="YAML config file (default with --resume: the run's own config.yaml)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field, e.g. pruning.target_sparsity=0.5")
    train.add_argument("--output-dir", help="where metrics, checkpoints and the exported model go (default: config output_dir)")
    train.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its latest checkpoint")
    train.add_argument("--keep-checkpoints", action="store_true", help="keep the checkpoints of a finished run (to extend it later)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--threads", type=int, default=None,
                       help="torch threads (default: the CPUs this process may use; give each of N concurrent runs its share)")
    train.set_defaults(func=cmd_train)

    spaces = sub.add_parser("spaces", help="list the shipped search spaces")
    spaces.set_defaults(func=cmd_spaces)

    launch = sub.add_parser("launch", help="run a multi-objective search (Ray Tune + Optuna, trials on Ray Train)")
    launch.add_argument("space", nargs="?", default="demo",
                        help="a shipped space name (raysearch spaces) or a YAML file (default: demo, the built-in synthetic pair)")
    launch.add_argument("--address", help="Ray cluster address, or auto: the cluster `ray start` recorded on this machine "
                                           "(default: start a new local Ray on 127.0.0.1, whatever is recorded)")
    launch.add_argument("--num-samples", type=int, default=12, help="configurations the sampler proposes, each trained on --repeats seeds, besides the baselines and the confirmation (default 12)")
    launch.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers of each trial (default 1)")
    launch.add_argument("--cpus-per-worker", type=float, default=1.0,
                        help="CPUs per worker (default 1); the cluster's CPUs over workers x CPUs decide how many trials run at once")
    launch.add_argument("--gpus-per-worker", type=float, default=0.0,
                        help="GPUs per worker: a fraction in (0, 1] packs several trials on one GPU (0.25: four), a whole "
                             "number gives each worker that many (default 0)")
    launch.add_argument("--max-failures", type=int, default=2,
                        help="worker restarts per trial after a crash, each from the trial's last checkpoint (default 2)")
    launch.add_argument("--keep-checkpoints", action="store_true",
                        help="keep a finished trial's checkpoints (default: only its exported model and results stay)")
    launch.add_argument("--rerun-duplicates", action="store_true",
                        help="train a configuration the search has already trained (default: the sampler is told its "
                             "results and asked for another; on a CPU training is deterministic, on a GPU a rerun is another sample)")
    launch.add_argument("--storage-path", default="runs", help="local folder or any URI Ray accepts (s3://, gs://, ...) (default: runs)")
    launch.add_argument("--name", help="experiment name (default: SPACE-timestamp)")
    launch.add_argument("--callback", action="append", default=[], choices=list(TRACKERS),
                        help="also log every trial to MLflow (MLFLOW_TRACKING_URI) or W&B (WANDB_MODE=offline works); "
                             "repeatable; needs the extra: pip install 'raysearch[mlflow]' / 'raysearch[wandb]'")
    launch.add_argument("--optuna-storage", help="SQLAlchemy URL of an Optuna RDB storage, e.g. sqlite:///study.db "
                                                 "(default: none; the study lives in the experiment's saved search state)")
    launch.add_argument("--sampler", default="tpe", choices=("tpe", "nsga2", "random", "grid"),
                        help="tpe (default), nsga2 or random (Optuna, two objectives); grid (every combination of categorical choices on each seed, "
                             "without baselines or confirmation)")
    launch.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    launch.add_argument("--repeats", type=int, default=None,
                        help="seeds each configuration is trained on; the sampler is told their mean (default: the space's repeats, 2)")
    launch.add_argument("--no-baselines", action="store_true",
                        help="do not run the presets no_transfer, multitask, sequential first (default: they run in every search)")
    launch.add_argument("--confirm-top", type=int, default=3,
                        help="configurations per sparsity level that the confirmation stage re-trains, besides the best "
                             "baseline and no_transfer (default 3)")
    launch.add_argument("--confirm-seeds", type=int, default=3,
                        help="fresh seeds of the confirmation stage that decides the pick; 0 skips it (default 3)")
    launch.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field of the space's base config")
    launch.add_argument("--submit", action="store_true", help="submit as a Ray Job (visible in the dashboard) instead of running here")
    launch.add_argument("--dashboard", default=DEFAULT_DASHBOARD, help=f"dashboard address for --submit (default: {DEFAULT_DASHBOARD})")
    launch.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    launch.set_defaults(func=cmd_launch)

    resume = sub.add_parser("resume", help="continue a stopped or crashed experiment")
    resume.add_argument("path", nargs="?", help="the experiment folder (STORAGE/NAME) (default: none; give it or --job)")
    resume.add_argument("--job", help="find the experiment from a job submitted with launch --submit (default: give PATH instead)")
    resume.add_argument("--dashboard", default=DEFAULT_DASHBOARD, help=f"dashboard address for --job (default: {DEFAULT_DASHBOARD})")
    resume.add_argument("--address", help="Ray cluster address, or auto (default: start a new local Ray on 127.0.0.1)")
    resume.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    resume.add_argument("--submit", action="store_true",
                        help="resume as a Ray Job carrying the original job's metadata (default: resume here)")
    resume.add_argument("--optuna-storage", help="the Optuna storage URL again, when it had a password (raysearch never stores it) "
                                                 "(default: the URL the launch recorded, enough when it had none)")
    resume.set_defaults(func=cmd_resume)

    export = sub.add_parser("export", help="copy the models of a search's trials (default: its Pareto front), or of a train run, with a card each")
    export.add_argument("experiment", help="the experiment folder (STORAGE/NAME), or a `raysearch train` run folder")
    export.add_argument("trial_ids", nargs="*", metavar="TRIAL_ID", help="trials to export (default: the dev-selected Pareto front)")
    export.add_argument("--out", required=True, help="where the models go, one folder per trial (never overwritten)")
    export.add_argument("--latency-batch", type=int, default=1, help="batch size of the CPU latency in the card (default 1)")
    export.add_argument("--latency-seq", type=int, default=128, help="sequence length of the CPU latency in the card (default 128)")
    export.add_argument("--onnx", action="store_true", help="also write model.onnx, checked against PyTorch (needs raysearch[onnx])")
    export.set_defaults(func=cmd_export)

    jobs = sub.add_parser("jobs", help="the searches a cluster ran as Ray Jobs (launch --submit), to resume one by id")
    jobs.add_argument("--dashboard", default=DEFAULT_DASHBOARD, help=f"the cluster's dashboard (default: {DEFAULT_DASHBOARD})")
    jobs.set_defaults(func=cmd_jobs)

    status = sub.add_parser("status", help="table of an experiment's trials")
    status.add_argument("path", nargs="?", help="the experiment folder (STORAGE/NAME) or its storage URI (default: none; give it or --job)")
    status.add_argument("--job", help="the search a `launch --submit` job runs (default: give PATH instead)")
    status.add_argument("--dashboard", default=DEFAULT_DASHBOARD, help=f"dashboard address for --job (default: {DEFAULT_DASHBOARD})")
    status.set_defaults(func=cmd_status)

    analyze = sub.add_parser("analyze", help="frames, Pareto fronts, plots and the how/what/when report of experiments")
    analyze.add_argument("experiments", nargs="+", help="experiment folders (or storage URIs)")
    analyze.add_argument("--out", required=True, help="output folder (new, empty, or an earlier analysis)")
    analyze.add_argument("--objective", action="append", metavar="COLUMN:max|min", help="objectives (default: the space's own)")
    analyze.add_argument("--sets", choices=["seed", "experiment"], help="aggregate fronts over seeds or experiments "
                         "(default: experiments when several are given, else seeds)")
    analyze.add_argument("--bin-width", type=float, default=0.1, help="sparsity bin width for matched comparisons (default 0.1)")
    analyze.set_defaults(func=cmd_analyze)
    return parser


def _version() -> str:
    try:
        return metadata.version("raysearch")
    except metadata.PackageNotFoundError:  # a checkout on PYTHONPATH (python -m raysearch), not installed
        return "(not installed)"


def main(argv=None) -> int:
    from .distributed.auth import use_cluster_token

    args = build_parser().parse_args(argv)
    use_cluster_token()  # before any command imports ray
    try:
        return args.func(args)
    except UserInputError as e:
        print(f"raysearch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
