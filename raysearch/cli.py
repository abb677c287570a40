"""Command line: raysearch train | spaces | launch | resume | status | jobs | analyze | export."""
import argparse
import sys
from importlib import metadata
from pathlib import Path

from .errors import UserInputError
from .search_cli import cmd_jobs, cmd_launch, cmd_resume, cmd_status, print_front
from .train_cli import cmd_train

def cmd_spaces(args) -> int:
    from search_spaces import list_spaces

    for space in list_spaces():
        print(f"{space['name']:<16} {space['description']}")
    print("\nor pass your own YAML file (see search_spaces/*.yaml for the format)")
    return 0


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
    print_front(result)
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

    launch = sub.add_parser("launch", help="run a multi-objective search (Ray Tune + Optuna)")
    launch.add_argument("space", nargs="?", default="demo",
                        help="a shipped space name (raysearch spaces) or a YAML file (default: demo, the built-in synthetic pair)")
    launch.add_argument("--address", help="Ray cluster address, or auto: the cluster `ray start` recorded on this machine "
                                           "(default: start a new local Ray on 127.0.0.1, whatever is recorded)")
    launch.add_argument("--num-samples", type=int, default=12, help="configurations the sampler proposes, each trained on --repeats seeds, besides the baselines and the confirmation (default 12)")
    launch.add_argument("--workers-per-trial", type=int, default=1, help="workers of each trial (default 1; more: data parallel on Ray Train)")
    launch.add_argument("--cpus-per-worker", type=float, default=1.0,
                        help="CPUs per worker (default 1); the cluster's CPUs over workers x CPUs decide how many trials run at once")
    launch.add_argument("--gpus-per-worker", type=float, default=0.0,
                        help="GPUs per worker: a fraction in (0, 1] packs several trials on one GPU (0.25: four), a whole "
                             "number gives each worker that many (default 0)")
    launch.add_argument("--max-failures", type=int, default=2,
                        help="restarts per trial after a crash, each from the trial's last checkpoint (default 2)")
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
