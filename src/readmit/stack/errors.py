"""The errors of the local services: one that did not start or answer, and `readmit stack`'s."""

from __future__ import annotations

from readmit.errors import ReadmitError


class ServiceError(ReadmitError):
    """A service did not start or did not become healthy."""


class StackError(ReadmitError):
    """A service of the stack did not start, or the stack is not up."""
