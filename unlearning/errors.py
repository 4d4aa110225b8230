"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: an unknown name, a missing path, a value out of range. Message = one clear line."""


class DataError(UserError):
    """A data set cannot be found or read."""


class TrialFailed(Exception):
    """A trial that started but cannot finish (NaN loss, out of memory): recorded as FAIL, not raised
    to the user."""


class Aborted(Exception):
    """A run stopped for a reason outside its input (the disk filled up, the run directory became
    read-only). Message: one line; the CLI exits 1. What was recorded before stays whole."""
