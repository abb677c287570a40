"""The search commands: launch, resume, status, jobs (Ray, Tune and the cluster's jobs are imported when one runs)."""
import re
import sys
from pathlib import Path

from .errors import TrialConfigError, UserInputError
from .reporting import EXPORT_DIR


def _check_experiment_name(name: str):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name) or ".." in name:
        raise UserInputError("--name", f"{name!r} is not a plain folder name", "use letters, digits, '.', '_' and '-' (no '/' or '..')")


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
        from .redact import refuse_password_in_job

        refuse_password_in_job(settings.optuna_storage, "launch")

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
    print_front(result)
    print(f"analysis: {written['report.md']} (and the frames and plots beside it)")
    from analysis.pick import summary_lines

    for line in summary_lines(result.verdicts or []):  # the verdict and the picked model come last
        print(line)
    return code


def print_front(result):
    from analysis.frames import coupled_groups

    quality = result.objectives[0][0]
    print(f"Pareto front of {len(result.trials)} trials ({quality} up, remaining parameters down):")
    for _, row in result.front.iterrows():
        how = row["preset"] if row["preset"] != "searched" else row["coupling"]
        model = row.get(EXPORT_DIR)
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

        from .redact import refuse_password_in_job

        refuse_password_in_job(args.optuna_storage, "resume")
        previous = args.job or (jobs.recorded_job(path) or {}).get("job_id")
        argv = ["resume", path, "--address", "auto"] + (["--verbose"] if args.verbose else [])
        argv += ["--optuna-storage", args.optuna_storage] if args.optuna_storage else []
        job_id = jobs.resubmit(path, previous, args.dashboard, argv)
        print(f"submitted job {job_id} resuming {path}" + (f" (the search of job {previous})" if previous else ""))
        print(f"follow it with: raysearch status {path}")
        return 0
    return _run_search(args.address, lambda search: search.resume(path, args.optuna_storage), path, args.verbose)


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
