"""One error type for bad user input: it names the field or file and the fix, in one line."""


class UserInputError(ValueError):
    def __init__(self, where: str, problem: str, fix: str):
        self.where, self.problem, self.fix = where, problem, fix
        super().__init__(f"{where}: {problem} — {fix}")

    def __reduce__(self):  # copied and pickled whole (Ray sends a trial's errors to the driver)
        return type(self), (self.where, self.problem, self.fix)


class TrialConfigError(UserInputError):
    """A trial that failed on its configuration (a combination of sampled values, or data its config names): a
    resume would fail the same way, so it is reported with the fix, never as resumable."""

    MARK = "the trial's configuration is invalid:"

    def __init__(self, where: str, problem: str, fix: str):
        super().__init__(where, problem, fix)
        self.args = (f"{self.MARK} {where}: {problem} — {fix}",)

    @classmethod
    def found_in(cls, text: str | None) -> str | None:
        """The one-line configuration error in a trial's error text, if that is why it failed."""
        lines = [line for line in (text if isinstance(text, str) else "").splitlines() if cls.MARK in line]
        return lines[-1][lines[-1].index(cls.MARK):].strip() if lines else None
