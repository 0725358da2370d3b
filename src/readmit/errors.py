"""Errors a user can act on: the CLI prints their message on one line, without a traceback."""


class ReadmitError(Exception):
    """A failure with a message that names what went wrong and where."""


class DatasetError(ReadmitError):
    """The data set could not be obtained, verified or parsed."""


class StorageError(ReadmitError):
    """A database could not be reached or is not in the expected state."""
