"""Command line: `raysearch train CONFIG.yaml [--set key=value ...]`."""
import argparse
import json
import sys
from pathlib import Path

import yaml

from .errors import UserInputError

RUN_MARKERS = ("metrics.jsonl", "checkpoints", "model", "final_metrics.json")


def _holds_run(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in RUN_MARKERS)


def cmd_train(args) -> int:
    from tqdm import tqdm

    from .config import load_config
    from .loop import load_tasks, run
    from .reporting import LocalReporter, checkpoints_in

    config = load_config(args.config, args.set)
    if args.output_dir:
        config.output_dir = args.output_dir
    out = Path(config.output_dir)
    resume_from = None
    if args.resume:
        found = checkpoints_in(out)
        if not found:
            raise UserInputError("--resume", f"no checkpoint in {out}/checkpoints", "run without --resume, or give the run's --output-dir")
        resume_from = found[-1]
    elif _holds_run(out):
        raise UserInputError("output_dir", f"{out} already holds a run", "pass --resume to continue it, or choose another --output-dir")
    tasks = load_tasks(config)  # data errors surface here, before anything is written
    reporter = LocalReporter(out)
    if resume_from is None:
        (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

    start = int(resume_from.name.split("_")[-1]) if resume_from else 0
    bar = tqdm(total=config.max_steps, initial=start, desc="train", unit="step", disable=args.quiet)

    def progress(step, m):
        bar.update(1)
        if step % 5 == 0 or step == config.max_steps:
            sparsity = m.get("target_expected_sparsity")
            bar.set_postfix(loss=f"{m['loss']:.3f}", **({"sparsity": f"{sparsity:.3f}"} if sparsity is not None else {}))

    final = run(config, reporter, resume_from=resume_from, export_dir=out / "model", progress=progress, tasks=tasks)
    bar.close()
    (out / "final_metrics.json").write_text(json.dumps(final, indent=2))
    summary = {k: final[k] for k in ("step", "target_dev", "target_test", "best_target_dev", "exact_sparsity", "remaining_params",
                                     "export_parameters", "export_size_bytes", "export_dev_agreement") if k in final}
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}/metrics.jsonl, {out}/checkpoints/, {out}/model/ (exported pruned model)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysearch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run one configuration locally")
    train.add_argument("config", help="YAML config file")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field, e.g. pruning.target_sparsity=0.5")
    train.add_argument("--output-dir", help="where metrics, checkpoints and the exported model go (default: config output_dir)")
    train.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its latest checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserInputError as e:
        print(f"raysearch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
