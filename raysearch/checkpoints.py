"""Checkpoint files: one torch file per checkpoint folder, written atomically, read onto the CPU with weights_only."""
from pathlib import Path

import torch

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


def write_checkpoint(state: dict, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (CHECKPOINT_FILE + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    tmp.replace(directory / CHECKPOINT_FILE)  # atomic: a crash never leaves a half checkpoint
    return directory


def read_checkpoint(directory: str | Path) -> dict:
    path = Path(directory) / CHECKPOINT_FILE
    return torch.load(path, map_location="cpu", weights_only=True)


def newest_intact_checkpoint(directories: list[Path], warn=print) -> tuple[Path | None, dict | None]:
    """(folder, state) of the newest of `directories` (oldest first) whose checkpoint reads back; a damaged newer
    one (a full disk, a copy cut short) is skipped with a warning naming both."""
    for index in range(len(directories) - 1, -1, -1):
        try:
            state = read_checkpoint(directories[index])
        except Exception as e:  # torch raises several types for a truncated or corrupt file
            following = directories[index - 1] if index else None
            warn(f"raysearch: warning: checkpoint {directories[index]} cannot be read ({type(e).__name__}); "
                 + (f"resuming from the one before it, {following}" if following else "no earlier checkpoint"))
            continue
        return directories[index], state
    return None, None
