"""An experiment folder on any storage Ray accepts (a local path or a URI such as s3://...), without Ray.

Besides Tune's files it holds `raysearch_experiment.json` and, per trial, `trial_configs/<trial id>.json`
(the validated config the trial ran with, written once as the trial starts) and `trial_history/<trial id>.jsonl`
(every evaluation the trial reported, kept across resumes), both read by the analysis, and for a trial that
failed for good `trial_errors/<trial id>.txt` (its error, which Tune leaves in Ray's temporary folder). A finished
trial's exported model is `models/<trial id>/` (loadable with transformers' Auto classes, see raysearch.hf), with
`export.json` beside its weights.

`raysearch launch` writes `raysearch_experiment.json` (space, settings, storage) beside Tune's own files;
its presence is what makes a folder a raysearch experiment. Reading goes through pyarrow's file
systems, so the search glue, `raysearch status` and the analysis read local and remote folders alike.
"""
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import UserInputError
from .reporting import EXPORT_DIR

EXPERIMENT_FILE = "raysearch_experiment.json"
TRIAL_CONFIGS = "trial_configs"
TRIAL_HISTORY = "trial_history"
TRIAL_ERRORS = "trial_errors"
MODELS = "models"
EXPORT_CARD = "export.json"  # beside each exported model: the export check and sizes


def trial_config_file(trial_id: str) -> str:
    """Where (relative to the experiment folder) a trial's resolved config is stored."""
    return f"{TRIAL_CONFIGS}/{trial_id}.json"


def trial_history_file(trial_id: str) -> str:
    """Where (relative to the experiment folder) a trial's evaluations are kept, one JSON line each."""
    return f"{TRIAL_HISTORY}/{trial_id}.jsonl"


def trial_error_file(trial_id: str) -> str:
    """Where (relative to the experiment folder) the error of a trial that failed for good is kept."""
    return f"{TRIAL_ERRORS}/{trial_id}.txt"


def trial_model_dir(trial_id: str) -> str:
    """Where (relative to the experiment folder) a finished trial's exported model is."""
    return f"{MODELS}/{trial_id}"


def model_in_experiment(export_dir) -> str | None:
    """A trial's exported model as the experiment holds it (`models/<trial id>`), for tables; None where there is none."""
    return "/".join(export_dir.split("/")[-2:]) if isinstance(export_dir, str) else None


def absolute(path: str) -> str:
    """Ray's experiment readers (and pyarrow) take absolute paths or URIs, not relative paths."""
    return path if "://" in str(path) else str(Path(path).expanduser().resolve())


def experiment_path(storage_path: str, name: str) -> str:
    return f"{storage_path.rstrip('/')}/{name}"


class Folder:
    """One folder, local or remote (any storage pyarrow reaches)."""

    def __init__(self, path: str):
        self.path = absolute(path)
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(self.path)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
            raise UserInputError(str(path), f"is not a folder or storage URI that can be read ({str(e).splitlines()[0][:100]})",
                                 "give a local folder, or a URI such as s3://bucket/path or gs://bucket/path") from None

    def exists(self, name: str = "") -> bool:
        return self.fs.get_file_info(self._full(name)).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    def list(self, name: str = "") -> list[str]:
        """Names (not paths) of the entries of a sub-folder, sorted."""
        infos = self.fs.get_file_info(pafs.FileSelector(self._full(name), allow_not_found=True))
        return sorted(info.base_name for info in infos)

    def modified(self, name: str) -> float | None:
        """When a file was last written (seconds since the epoch), None when it is not there."""
        info = self.fs.get_file_info(self._full(name))
        return info.mtime.timestamp() if info.type != pafs.FileType.NotFound and info.mtime is not None else None

    def read_text(self, name: str) -> str:
        with self.fs.open_input_stream(self._full(name)) as f:
            return f.read().decode()

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self._full(name)) as f:
            return f.read()

    def write_text(self, name: str, text: str):
        """Write a file (its sub-folders created), local or remote."""
        self.write_bytes(name, text.encode())

    def write_bytes(self, name: str, data: bytes):
        full = self._full(name)
        self.fs.create_dir(full.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(full) as f:
            f.write(data)

    def append_text(self, name: str, text: str):
        """Add to the end of a file (made if missing); object stores cannot append, so there the file is rewritten."""
        full = self._full(name)
        self.fs.create_dir(full.rsplit("/", 1)[0], recursive=True)
        try:
            with self.fs.open_append_stream(full) as f:
                f.write(text.encode())
        except (pa.ArrowNotImplementedError, NotImplementedError):
            self.write_text(name, (self.read_text(name) if self.exists(name) else "") + text)

    def remove(self, name: str):
        """Remove one file (nothing when it is not there)."""
        if self.exists(name):
            self.fs.delete_file(self._full(name))

    def move(self, name: str, to: str):
        """Rename a file within this folder (sub-folders of `to` created)."""
        self.fs.create_dir(self._full(to).rsplit("/", 1)[0], recursive=True)
        self.fs.move(self._full(name), self._full(to))

    def upload(self, local_dir: str | Path, name: str):
        """Copy a local folder into this one (local or remote), as NAME."""
        full = self._full(name)
        self.fs.create_dir(full, recursive=True)
        pafs.copy_files(str(local_dir), full, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)

    def download(self, name: str, local_dir: str | Path):
        """Copy a sub-folder of this one (local or remote) into a local folder."""
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self._full(name), str(local_dir), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())

    def local(self, name: str, scratch: str | Path) -> Path:
        """A sub-folder as a local path to read: itself on a local disk, else a copy downloaded into SCRATCH."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            return Path(self._full(name))
        self.download(name, Path(scratch, name))
        return Path(scratch, name)

    def delete(self, name: str):
        """Remove a sub-folder and what it holds (nothing when it is not there)."""
        if self.exists(name):
            self.fs.delete_dir(self._full(name))

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
    try:
        meta = json.loads(folder.read_text(EXPERIMENT_FILE))
    except (ValueError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict) or not isinstance(meta.get("space"), dict):
        raise UserInputError(f"{path}/{EXPERIMENT_FILE}", "is damaged or incomplete (not the JSON `raysearch launch` writes)",
                             "restore it from a copy; the trials' results beside it are untouched")
    return meta


def tune_has_saved(path: str) -> bool:
    """Whether Tune saved the experiment's state at least once (what `resume` needs)."""
    folder = Folder(path)
    return folder.is_dir() and any(n.startswith("experiment_state-") for n in folder.list())


def holds_experiment(path: str) -> bool:
    """True when a local folder exists and is not empty (remote storage: never assumed)."""
    return "://" not in path and Path(path).exists() and any(Path(path).iterdir())


def read_evaluations(folder: Folder, names: list[str]) -> list[dict]:
    """The evaluations (JSON lines with a `step`) in these files of an experiment, one per step in step order: a step
    reported again (after a restart, or by the final export report) keeps its latest report."""
    by_step = {}
    for name in names:
        if not folder.exists(name):
            continue
        for line in folder.read_text(name).splitlines():
            try:
                result = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if isinstance(result, dict) and "step" in result:
                by_step[result["step"]] = result
    return [by_step[s] for s in sorted(by_step)]


def finished_twin(folder: Folder, trial_id: str, config: dict) -> str | None:
    """A trial of the experiment, other than TRIAL_ID, that ran exactly this resolved config and finished; None where
    there is none. Finished means its last report is the export's (a trial's final report, after its last evaluation):
    a twin caught between the two would hand on results without a model. Samplers do propose a configuration again
    (TPE re-ran an uncoupled one in the study's search)."""
    for name in folder.list(TRIAL_CONFIGS):
        other = name.removesuffix(".json")
        if other == trial_id or not name.endswith(".json"):
            continue
        try:
            same = json.loads(folder.read_text(f"{TRIAL_CONFIGS}/{name}")) == config
        except ValueError:
            continue
        history = read_evaluations(folder, [trial_history_file(other)]) if same else []
        if history and history[-1]["step"] == config.get("max_steps") and EXPORT_DIR in history[-1]:
            return other
    return None
