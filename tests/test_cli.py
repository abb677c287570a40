"""The command line as people use it: help that states each default, `--version`, and choices refused at once."""
import argparse
import io
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from raysearch.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _subcommands() -> dict:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> list:
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_option_says_what_it_does_and_what_happens_without_it(command):
    parser = _subcommands()[command]
    for action in _options(parser):
        name = "/".join(action.option_strings) or action.dest
        assert action.help and len(action.help) > 10, f"{command} {name}: no help text"
        # an option one may leave out says what it is then; a flag's "then" is its absence, so it needs no default
        is_flag = isinstance(action, (argparse._StoreTrueAction, argparse._AppendAction))
        may_be_left_out = action.option_strings and not action.required and not is_flag
        if may_be_left_out or (not action.option_strings and action.nargs == "?"):
            assert "default" in action.help, f"{command} {name}: the help does not state its default ({action.help!r})"
        if isinstance(action.default, (int, float)) and not isinstance(action.default, bool):  # the stated default is the parser's
            shown = f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
            assert f"default {shown}" in action.help or f"default: {shown}" in action.help, (command, name, action.help)


def test_the_options_people_asked_about_show_their_defaults_in_the_help_page(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["launch", "--help"])
    assert exit_.value.code == 0
    page = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for text in ("workers of each trial (default 1;", "CPUs per worker (default 1)", "a whole number gives each worker that many (default 0)",
                 "seeds each configuration is trained on", "0 skips it (default 3)",
                 "(default: runs)", "sampler seed (default 0)", "tpe (default)"):
        assert text in page, text
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert "the experiment folder (STORAGE/NAME)" in " ".join(capsys.readouterr().out.split())


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"raysearch {metadata.version('raysearch')}"


def test_an_unknown_sampler_is_refused_in_one_line_before_ray_is_imported():
    check = ("import sys\nfrom raysearch.cli import main\ntry:\n    main(['launch', '--sampler', 'bogus'])\n"
             "except SystemExit as e:\n    print('ray' in sys.modules, e.code)")
    out = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "2"], out.stdout + out.stderr
    error = [line for line in out.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "--sampler: invalid choice: 'bogus'" in error[0] and "'tpe'" in error[0], out.stderr


def test_the_raylet_worker_count_warning_is_dropped_and_every_other_line_kept():
    from raysearch.distributed.quiet import LinesDropped

    out = io.StringIO()
    stream = LinesDropped(out)
    print("[raysearch] 1/12 trials done", file=stream)
    print("\x1b[33m(raylet)\x1b[0m WARNING: 8 PYTHON worker processes have been started on node: f74d with address: "
          "127.0.0.1, which is 4x the maximum expected startup concurrency (2).", file=stream)
    print("\x1b[33m(raylet)\x1b[0m A worker died or was killed while executing a task by an unexpected system error.", file=stream)
    print("half a line", end="", file=stream)
    stream.flush()
    assert out.getvalue().splitlines() == ["[raysearch] 1/12 trials done",
                                           "\x1b[33m(raylet)\x1b[0m A worker died or was killed while executing a task by "
                                           "an unexpected system error.", "half a line"]


def test_hiding_the_chatter_puts_everything_back_afterwards(monkeypatch):
    import optuna

    from raysearch.distributed.quiet import chatter_hidden

    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    before = sys.stdout, optuna.logging.get_verbosity()
    with chatter_hidden(verbose=False):
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0" and optuna.logging.get_verbosity() == optuna.logging.WARNING
        assert sys.stdout is not before[0]
    assert (sys.stdout, optuna.logging.get_verbosity()) == before and "RAY_AIR_NEW_OUTPUT" not in os.environ
    with chatter_hidden(verbose=True):  # --verbose changes nothing
        assert sys.stdout is before[0] and "RAY_AIR_NEW_OUTPUT" not in os.environ
