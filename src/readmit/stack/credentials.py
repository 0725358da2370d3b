"""The stack's generated secrets: logins, keys and passwords, made once per data dir."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from readmit.settings import Settings
from readmit.stack.layout import Paths, write_private

MLFLOW_USER = "readmit"


@dataclass(frozen=True)
class Secrets:
    airflow_password: str
    jwt_secret: str
    api_key: str
    s3_access_key: str
    s3_secret_key: str
    postgres_password: str
    pseudonym_key: str
    mlflow_password: str


def load_secrets(paths: Paths, settings: Settings) -> Secrets:
    """Generated once per data dir and kept in a 0600 file (READMIT_API_KEY wins if set)."""
    if paths.secrets.exists():
        stored = json.loads(paths.secrets.read_text())
    else:
        stored = {
            "airflow_password": secrets.token_urlsafe(12),
            "jwt_secret": secrets.token_urlsafe(64),
            "api_key": secrets.token_urlsafe(24),
            "s3_access_key": "readmit",
            "s3_secret_key": secrets.token_urlsafe(24),
        }
        paths.root.mkdir(parents=True, exist_ok=True)
        write_private(paths.secrets, json.dumps(stored, indent=1))
    added = {"postgres_password": 18, "pseudonym_key": 32, "mlflow_password": 18}  # later versions
    if any(name not in stored for name in added):
        for name, size in added.items():
            stored.setdefault(name, secrets.token_urlsafe(size))
        write_private(paths.secrets, json.dumps(stored, indent=1))
    if settings.api_key:
        stored["api_key"] = settings.api_key
    return Secrets(**stored)
