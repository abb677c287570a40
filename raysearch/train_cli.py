"""`raysearch train`: one configuration in this process, into a run folder (raysearch.run_folder)."""
import json
import sys
from pathlib import Path

from .errors import UserInputError


def cmd_train(args) -> int:
    from tqdm import tqdm

    from . import run_folder
    from .checkpoints import newest_intact_checkpoint
    from .config import load_config
    from .loop import available_cpus, run
    from .trainer import preflight

    if args.threads is not None and args.threads < 1:
        raise UserInputError("--threads", f"must be >= 1, got {args.threads}", "give the number of CPUs this run may use")
    if args.config is None:  # a run is resumed by its folder alone: the config it started with is in it
        if not (args.resume and args.output_dir):
            raise UserInputError("config", "no config file given", "give a YAML config, or --resume --output-dir RUN to continue a run")
        args.config = str(Path(args.output_dir) / run_folder.CONFIG_FILE)
    config = load_config(args.config, args.set)
    if args.output_dir:
        config.output_dir = args.output_dir
    out = Path(config.output_dir)
    run_folder.check_output_dir(out, args.resume)
    resume_from, resume_state = None, None
    if args.resume:
        resume_from, resume_state = newest_intact_checkpoint(run_folder.checkpoints_in(out), warn=lambda line: print(line, file=sys.stderr))
        if resume_from is None and (out / run_folder.FINAL_METRICS).is_file():
            raise UserInputError("--resume", f"{out} finished and its checkpoints were removed", "start a new --output-dir "
                                 "(a run started with --keep-checkpoints can be extended later)")
        if resume_from is None:
            raise UserInputError("--resume", f"no checkpoint in {out}/checkpoints", "run without --resume, or give the run's --output-dir")
    tasks = preflight(config)  # data, model and device errors surface here, before anything is written
    created = not out.exists()
    if resume_from is None:
        run_folder.create(out, config)
    else:
        run_folder.record_changes(out, resume_state, config)  # refuses a change of the model's shape
    reporter = run_folder.LocalReporter(out)

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
        final = run(config, reporter, resume_from=resume_from, export_dir=out / run_folder.MODEL_DIR, progress=progress, tasks=tasks, threads=threads)
    except BaseException:
        if created and not run_folder.checkpoints_in(out):  # a folder this command made and nothing worth keeping in it
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    bar.close()
    run_folder.finish(out, final, args.keep_checkpoints)
    summary = {k: final[k] for k in ("step", "target_dev", "target_test", "best_target_dev", "exact_sparsity", "remaining_params",
                                     "export_parameters", "export_size_bytes", "export_dev_agreement") if k in final}
    print(json.dumps(summary, indent=2))
    kept = f"{out}/checkpoints/, " if args.keep_checkpoints else ""
    print(f"wrote {out}/{run_folder.METRICS_FILE}, {kept}{out}/model/ (exported pruned model, its card README.md), {out}/{run_folder.FINAL_METRICS}")
    return 0
