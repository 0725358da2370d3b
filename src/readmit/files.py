"""Local state holds patient data (SQLite files, the data set cache): owner-only by default.

Folders readmit creates are 0700, its database and cache files 0600, whatever the umask. An
existing folder is left as it is: it may be one the user chose and shares on purpose.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# The checkout the package is installed from in editable mode: dags/, observability/,
# s3server/ and loadtest/ live beside src/.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parent as folders only their owner may enter."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)  # mkdir's mode is reduced by the umask, never widened
    return path


def private_file(path: Path) -> Path:
    """Create `path` (if needed) as a file only its owner may read or write; tighten it if not.

    An existing file is never opened here: closing any descriptor of a file drops every POSIX
    lock this process holds on it, and SQLite's connections to it rely on those locks (without
    them another process deletes the write-ahead log under them).
    """
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    if path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
        path.chmod(0o600)
    return path
