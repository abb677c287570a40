"""One error type for bad user input: it names the field or file and the fix, in one line."""


class UserInputError(ValueError):
    def __init__(self, where: str, problem: str, fix: str):
        self.where, self.problem, self.fix = where, problem, fix
        super().__init__(f"{where}: {problem} — {fix}")

    def __reduce__(self):  # copied and pickled whole (Ray sends a trial's errors to the driver)
        return type(self), (self.where, self.problem, self.fix)
