"""Writing an `Analysis` out: frames (parquet/CSV), plots and report.md, into a folder that holds nothing
else of the user's."""
import json
from pathlib import Path

from raysearch.errors import UserInputError

from . import plots
from .compute import Analysis
from .frames import save_frames
from .pareto import front_plot_frame
from .report import render_markdown

MARKER = "raysearch_analysis.json"  # marks a folder as analysis output, which a rerun may overwrite


def _check_out_dir(out: Path):
    """Never overwrite a user's files: only an empty folder or an earlier analysis output is written to."""
    if out.exists() and not out.is_dir():
        raise UserInputError(str(out), "is a file", "give a folder for --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UserInputError(str(out), "is not empty and holds no earlier analysis", "give a new or empty folder for --out")


def write_outputs(result: Analysis, out_dir: str | Path, formats=("parquet", "csv")) -> dict:
    """Frames, plots and report.md under OUT; returns the paths written, by name."""
    out = Path(out_dir)
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"experiments": sorted(result.trials["experiment"].unique())}))
    frames = {"trials": result.trials.assign(pareto_rank=result.ranks), "history": result.history,
              "front": result.front, "effects": result.effects, "hypervolume_history": result.hypervolume_history}
    written = {p.name: p for p in save_frames(frames, out, formats)}
    quality = result.objectives[0][0]
    plot_files = {"front": "front.png", "effects": "effects.png", "hypervolume": "hypervolume.png"}
    (x, x_mode) = result.objectives[1]
    plots.plot_front(front_plot_frame(result.trials.loc[result.ranks.index], result.objectives), quality, x, x_mode, out / plot_files["front"])
    plots.plot_effects(result.effects, out / plot_files["effects"], quality)
    plots.plot_hypervolume(result.hypervolume_history, out / plot_files["hypervolume"])
    (out / "report.md").write_text(render_markdown(result, plot_files))
    written.update({name: out / name for name in [*plot_files.values(), "report.md"]})
    return written
