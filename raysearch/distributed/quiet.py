"""Ray's, Tune's and Optuna's start-up chatter kept off a search's output (`launch` / `resume` without --verbose).

What a 2-CPU demo printed besides raysearch's own lines (Ray 2.60, Optuna 4-5):
- Ray's logger: "Started a local Ray instance", "Connecting to existing Ray cluster", the token-auth notices
  (`ray.init(logging_level=...)`, raised to ERROR);
- Tune's new output engine: a "Configuration for experiment" box, "View detailed results here" and a TensorBoard
  hint, printed even at verbose=0 (RAY_AIR_NEW_OUTPUT=0 selects the older reporter, silent at verbose=0);
- Optuna: "A new study created in memory" (its verbosity, raised to WARNING);
- the raylet: "N PYTHON worker processes have been started ... 4x the maximum expected startup concurrency". Each
  data-parallel trial is a 0-CPU Tune actor plus a Train controller and workers, so on a small machine the worker
  count passes 4x the CPUs by design. Ray sends this to the driver's stdout with every other raylet message and has no switch for
  it alone, so that one line is dropped from stdout; every other raylet message (an out-of-memory kill, say) stays;
- Tune's traceback of a trial that failed on its configuration (raysearch.errors.TrialConfigError): raysearch's
  progress line says what is invalid and the fix in one line. Every other trial error keeps its traceback.
Everything is put back when the search ends.
"""
import contextlib
import io
import logging
import os
import sys

import optuna

from ..errors import TrialConfigError

RAY_LOGGING_LEVEL = {True: logging.INFO, False: logging.ERROR}  # verbose -> the level ray.init sets for Ray's logger
TUNE_CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"  # logs "Trial task failed" with the traceback
DROPPED_LINES = ("worker processes have been started on node",)  # expected on a small machine (module docstring)


class LinesDropped(io.TextIOBase):
    """A text stream that passes every whole line to `stream` except those holding one of `dropped`."""

    def __init__(self, stream, dropped=DROPPED_LINES):
        self.stream, self.dropped, self._partial = stream, dropped, ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if not any(d in line for d in self.dropped):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self):
        if self._partial and not any(d in self._partial for d in self.dropped):
            self.stream.write(self._partial)  # a line still being written (print(..., end="")) is shown as it is
        self._partial = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", "utf-8")


class ConfigErrorsDropped(logging.Filter):
    """Drops a log record whose exception is a trial's invalid configuration (raysearch prints it in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], TrialConfigError))


@contextlib.contextmanager
def chatter_hidden(verbose: bool):
    """Within it, a search prints raysearch's lines only; with `verbose`, everything, as Ray and Optuna print it."""
    if verbose:
        yield
        return
    saved_output, saved_verbosity, saved_stdout = os.environ.get("RAY_AIR_NEW_OUTPUT"), optuna.logging.get_verbosity(), sys.stdout
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sys.stdout = LinesDropped(saved_stdout)
    tune_log, config_errors = logging.getLogger(TUNE_CONTROLLER_LOGGER), ConfigErrorsDropped()
    tune_log.addFilter(config_errors)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = saved_stdout
        tune_log.removeFilter(config_errors)
        optuna.logging.set_verbosity(saved_verbosity)
        if saved_output is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved_output
