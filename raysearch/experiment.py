"""An experiment folder on any storage Ray accepts (a local path or a URI such as s3://...), without Ray.

Besides Tune's files it holds `raysearch_experiment.json` and, per trial, `trial_configs/<trial id>.json`:
the validated config the trial ran with, written once as the trial starts, read by the analysis.

`raysearch launch` writes `raysearch_experiment.json` (space, settings, storage) beside Tune's own files;
its presence is what makes a folder a raysearch experiment. Reading goes through pyarrow's file
systems, so the search glue, `raysearch status` and the analysis read local and remote folders alike.
"""
import json
from pathlib import Path

import pyarrow.fs as pafs

from .errors import UserInputError

EXPERIMENT_FILE = "raysearch_experiment.json"
TRIAL_CONFIGS = "trial_configs"


def trial_config_file(trial_id: str) -> str:
    """Where (relative to the experiment folder) a trial's resolved config is stored."""
    return f"{TRIAL_CONFIGS}/{trial_id}.json"


def absolute(path: str) -> str:
    """Ray's experiment readers (and pyarrow) take absolute paths or URIs, not relative paths."""
    return path if "://" in str(path) else str(Path(path).expanduser().resolve())


def experiment_path(storage_path: str, name: str) -> str:
    return f"{storage_path.rstrip('/')}/{name}"


class Folder:
    """Read access to one folder, local or remote."""

    def __init__(self, path: str):
        self.path = absolute(path)
        self.fs, self.root = pafs.FileSystem.from_uri(self.path)

    def exists(self, name: str = "") -> bool:
        return self.fs.get_file_info(self._full(name)).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    def list(self, name: str = "") -> list[str]:
        """Names (not paths) of the entries of a sub-folder, sorted."""
        infos = self.fs.get_file_info(pafs.FileSelector(self._full(name), allow_not_found=True))
        return sorted(info.base_name for info in infos)

    def read_text(self, name: str) -> str:
        with self.fs.open_input_stream(self._full(name)) as f:
            return f.read().decode()

    def write_text(self, name: str, text: str):
        """Write a file (its sub-folders created), local or remote."""
        full = self._full(name)
        self.fs.create_dir(full.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(full) as f:
            f.write(text.encode())

    def _full(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}" if name else self.root


def write_meta(path: str, meta: dict):
    fs, root = pafs.FileSystem.from_uri(absolute(path))
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/{EXPERIMENT_FILE}") as f:
        f.write(json.dumps(meta, indent=2).encode())


def read_meta(path: str) -> dict:
    """The experiment's metadata; a one-line error for a folder that is not a raysearch experiment."""
    folder = Folder(path)
    if not folder.is_dir():
        raise UserInputError(str(path), "no such experiment folder", "give the folder that `raysearch launch` printed")
    if not folder.exists(EXPERIMENT_FILE):
        raise UserInputError(str(path), f"is not a raysearch experiment (no {EXPERIMENT_FILE})", "give the folder that `raysearch launch` printed")
    return json.loads(folder.read_text(EXPERIMENT_FILE))


def holds_experiment(path: str) -> bool:
    """True when a local folder exists and is not empty (remote storage: never assumed)."""
    return "://" not in path and Path(path).exists() and any(Path(path).iterdir())
