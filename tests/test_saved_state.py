"""Tune's saved state damaged by a full disk: the driver's good copy, the resume's fallback to it, and the one-line
refusal when there is none. Real files in the layout Tune writes; the end-to-end run is bench/faults.py's `disk`."""
import pickle

import pytest

from raysearch.distributed.saved_state import DAMAGED, GOOD, keep_good_state, repair_saved_state
from raysearch.errors import UserInputError

SESSION = "2026-11-22_19-08-59"


def _write_state(folder, session=SESSION, trials=2):
    (folder / f"experiment_state-{session}.json").write_text(f'{{"trial_data": [], "trials": {trials}}}')
    (folder / f"search_gen_state-{session}.json").write_bytes(pickle.dumps({"counter": trials}))  # a pickle, as Tune writes it
    (folder / f"searcher-state-{session}.pkl").write_bytes(pickle.dumps({"trials": trials}, protocol=4))


def test_a_whole_state_is_copied_and_a_damaged_one_never_replaces_the_copy(tmp_path):
    _write_state(tmp_path, trials=2)
    assert keep_good_state(str(tmp_path))
    assert sorted(p.name for p in (tmp_path / GOOD).iterdir()) == sorted(p.name for p in tmp_path.glob("*-*"))
    (tmp_path / f"searcher-state-{SESSION}.pkl").write_bytes(pickle.dumps({"trials": 3}, protocol=4)[:-7])  # cut short
    assert not keep_good_state(str(tmp_path))
    assert pickle.loads((tmp_path / GOOD / f"searcher-state-{SESSION}.pkl").read_bytes()) == {"trials": 2}


def test_resume_puts_the_good_copy_back_and_keeps_the_damaged_files(tmp_path):
    _write_state(tmp_path, trials=2)
    keep_good_state(str(tmp_path))
    _write_state(tmp_path, trials=3)
    (tmp_path / f"searcher-state-{SESSION}.pkl").write_bytes(b"")  # what the full disk left
    line = repair_saved_state(str(tmp_path))
    assert f"searcher-state-{SESSION}.pkl was empty" in line and "last good copy" in line and DAMAGED in line
    assert pickle.loads((tmp_path / f"searcher-state-{SESSION}.pkl").read_bytes()) == {"trials": 2}
    assert '"trials": 2' in (tmp_path / f"experiment_state-{SESSION}.json").read_text()  # the set is consistent
    kept = list((tmp_path / DAMAGED).rglob("*"))
    assert {p.name for p in kept if p.is_file()} == {f"experiment_state-{SESSION}.json", f"search_gen_state-{SESSION}.json",
                                                    f"searcher-state-{SESSION}.pkl"}  # moved aside, not deleted
    assert repair_saved_state(str(tmp_path)) is None  # whole now: nothing to do


def test_a_newer_driver_sessions_damaged_state_falls_back_to_the_older_good_one(tmp_path):
    _write_state(tmp_path, trials=2)
    keep_good_state(str(tmp_path))
    _write_state(tmp_path, session="2026-11-23_08-00-00", trials=4)
    (tmp_path / "experiment_state-2026-11-23_08-00-00.json").write_text('{"trial_data": [')  # cut short
    repair_saved_state(str(tmp_path))
    assert sorted(p.name for p in tmp_path.glob("*state-*")) == sorted(p.name for p in (tmp_path / GOOD).iterdir())


def test_a_damaged_state_with_no_good_copy_is_refused_in_one_line(tmp_path):
    _write_state(tmp_path)
    (tmp_path / f"experiment_state-{SESSION}.json").write_text("")
    with pytest.raises(UserInputError, match="is empty: Tune's saved state was damaged") as e:
        repair_saved_state(str(tmp_path))
    assert "\n" not in str(e.value) and "raysearch launch" in str(e.value)
    assert (tmp_path / f"experiment_state-{SESSION}.json").exists()  # nothing moved or lost
