"""The errors a user can cause and fix; the CLI turns them into one line and a non-zero exit."""


class TransferlabError(Exception):
    """A problem with the user's input or environment, explained in its message."""


class ConfigError(TransferlabError):
    """A config value that is not allowed; the message names the key and what is allowed."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run (or, with ``sweep``, the runs of a sweep in ``run_dir``);
    its record is marked interrupted and its last epoch-end checkpoint is on disk. ``exit_code`` is
    the shell's convention (128 + signal number); ``record`` the run's final record, when known."""

    def __init__(self, run_dir: str, exit_code: int, record: dict | None = None, sweep: bool = False):
        super().__init__(run_dir)
        self.run_dir = run_dir
        self.exit_code = exit_code
        self.record = record
        self.sweep = sweep


class JobRaised(BaseException):
    """A Hydra job raised ``error`` instead of returning its record (the run's files could not be
    written). A BaseException, raised from a callback, because Hydra turns a callback's Exceptions
    into warnings, and reports a job's own error with a line of its own before raising it; the
    CLI raises ``error`` again, which makes it one line."""

    def __init__(self, error: BaseException):
        super().__init__(error)
        self.error = error


class SweepRefused(BaseException):
    """A sweep refused before it started (by a Hydra callback of transferlab.tuning or loggers). A
    BaseException because Hydra turns the Exceptions of a callback into warnings and goes on;
    transferlab.launch turns this one into a ConfigError line."""
