"""A last good copy of Tune's saved state, and a resume that falls back to it.

Tune rewrites its state files in place (`experiment_state-<start>.json`, `search_gen_state-<start>.json`,
`searcher-state-<start>.pkl`, one set per driver session). A driver writing them while the storage fills leaves
them empty or cut short, and `Tuner.restore` then fails ("Failed to restore the run state ... EOFError") and
restarts the experiment instead. So the driver keeps a copy of the newest set whenever it is whole
(`saved_state_good/`), and `resume` checks the newest set first: a damaged one is moved aside into
`damaged_state/` (kept, never deleted) and the good copy put in its place; with no good copy it refuses in one line.

The checks are structural (no unpickling): a pickle must start with the protocol opcode and end with STOP, which a
file cut short does not; anything else must parse as JSON.
"""
import json
import time

from ..errors import UserInputError
from ..experiment import Folder

STATE_PREFIXES = ("experiment_state-", "search_gen_state-", "searcher-state-")
GOOD = "saved_state_good"
DAMAGED = "damaged_state"


def newest_state(folder: Folder) -> list[str]:
    """The newest file of each kind of Tune's saved state (names sort by the driver session's start time)."""
    names = folder.list()
    newest = [max((n for n in names if n.startswith(prefix)), default=None) for prefix in STATE_PREFIXES]
    return [n for n in newest if n is not None]


def damage(data: bytes, name: str) -> str | None:
    """Why a state file cannot be what Tune wrote (None: it looks whole)."""
    if not data:
        return "empty"
    if data[:1] == b"\x80":  # a pickle (Tune pickles `search_gen_state-*.json` too, despite its name)
        return None if data[-1:] == b"." else "not a whole pickle (cut short?)"
    try:
        json.loads(data)
    except ValueError:
        return "neither whole JSON nor a whole pickle (cut short?)"
    return None


def keep_good_state(path: str) -> bool:
    """Copy the newest state set into saved_state_good/ if every file of it is whole; True when copied. Each copy
    is written under a temporary name and renamed, so that a full disk leaves the previous good copy as it was."""
    folder = Folder(path)
    state = newest_state(folder)
    if not any(n.startswith("experiment_state-") for n in state):
        return False
    contents = {name: folder.read_bytes(name) for name in state}
    if any(damage(data, name) for name, data in contents.items()):
        return False
    for name, data in contents.items():
        folder.write_bytes(f"{GOOD}/.{name}.partial", data)
    for name in contents:
        folder.move(f"{GOOD}/.{name}.partial", f"{GOOD}/{name}")
    for stale in set(folder.list(GOOD)) - set(contents):  # the copy of a previous driver session's set
        if not stale.startswith("."):
            folder.remove(f"{GOOD}/{stale}")
    return True


def repair_saved_state(path: str) -> str | None:
    """Before a resume: None when the newest state is whole; else put the last good copy in its place and return a
    line that says so. Raises UserInputError when it is damaged and no good copy exists."""
    folder = Folder(path)
    state = newest_state(folder)
    problems = {name: why for name in state if (why := damage(folder.read_bytes(name), name))}
    if not problems:
        return None
    name, why = next(iter(problems.items()))
    good = [n for n in folder.list(GOOD) if not n.startswith(".")]
    if not any(n.startswith("experiment_state-") for n in good) or any(damage(folder.read_bytes(f"{GOOD}/{n}"), n) for n in good):
        raise UserInputError(f"{path}/{name}", f"is {why}: Tune's saved state was damaged (a full disk while it was written?) "
                             "and no good copy of it was kept", "its finished trials stay readable (`raysearch status`, "
                             "`raysearch analyze`); run the rest as a new search with `raysearch launch`")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for damaged in state:  # the whole newest set, so that Tune cannot pick a newer file beside the good copy
        folder.move(damaged, f"{DAMAGED}/{stamp}/{damaged}")
    for n in good:
        folder.write_bytes(n, folder.read_bytes(f"{GOOD}/{n}"))
    saved = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(folder.modified(f"{GOOD}/{good[0]}") or 0))
    return (f"raysearch: {name} was {why}; resuming from the last good copy of Tune's state (saved {saved}): trials "
            f"that ended after it run again (from a checkpoint where one is kept); the damaged files are in {DAMAGED}/{stamp}/")
