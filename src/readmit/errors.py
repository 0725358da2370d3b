"""Errors a user can act on: the CLI prints their message on one line, without a traceback."""


class ReadmitError(Exception):
    """A failure with a message that names what went wrong and where."""


class DatasetError(ReadmitError):
    """The data set could not be obtained, verified or parsed."""


class StorageError(ReadmitError):
    """A database could not be reached or is not in the expected state."""


def first_line(value: object) -> str:
    """The first line of an error (or any text), for one-line messages and logs; "" when the
    message is empty, so a bare `raise SomeError()` never turns into an IndexError."""
    lines = str(value).strip().splitlines()
    return lines[0].strip() if lines else ""
