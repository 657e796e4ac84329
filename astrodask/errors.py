"""User-facing errors: one line naming the problem and the fix; the CLI prints them without traceback."""


class AstrodaskError(Exception):
    """A problem the user can fix (bad input, bad option, existing output). Message is one line."""


class ConfigError(AstrodaskError):
    """An invalid configuration field; the message names the field and how to fix it."""

    def __init__(self, field: str, problem: str, fix: str):
        self.field = field
        super().__init__(f"{field}: {problem}; {fix}")
