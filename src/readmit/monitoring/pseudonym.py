"""Keyed patient pseudonyms: HMAC-SHA256 of `patient_nbr` under READMIT_PSEUDONYM_KEY.

The same patient gets the same pseudonym under one key, so visits can be linked in the
prediction log; without the key the number cannot be recovered by hashing every candidate.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from readmit.settings import Settings


def pseudonym(key: bytes, patient_nbr: int) -> str:
    return hmac.new(key, str(patient_nbr).encode(), hashlib.sha256).hexdigest()


def pseudonym_key(settings: Settings) -> bytes:
    """The configured key, or the one kept under the data dir (made on first use)."""
    if settings.pseudonym_key is not None:
        return settings.pseudonym_key.get_secret_value().encode()
    return _key_file(settings.pseudonym_key_file).encode()


def _key_file(path: Path) -> str:
    """Read the key file; create it (0600 in a 0700 folder) when missing. Two processes
    starting at once agree: the file appears whole through a hard link, or not at all."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(secrets.token_urlsafe(32))
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()
