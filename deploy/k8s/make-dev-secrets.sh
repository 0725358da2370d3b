#!/usr/bin/env bash
# Create an overlay's secrets/* from its committed secrets/*.example, with every
# `change-me-NAME` placeholder replaced by a fresh random value: the same value for the
# same NAME in every file, so each password and the URLs that hold it agree.
# `change-me-fernet-key` becomes a valid Fernet key; `sha256-of:VALUE` becomes
# `sha256:<hex digest of VALUE>` (the API's key file holds digests of the keys).
#
#   deploy/k8s/make-dev-secrets.sh                  # overlays/dev
#   deploy/k8s/make-dev-secrets.sh overlays/prod    # any overlay folder (relative to deploy/k8s)
#
# The files are git-ignored and stay on this machine. An overlay whose files all
# exist is left alone; one with only some of them is an error (new random values would not
# match the existing ones). For production, write the files from your secret store instead.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
overlay="${1:-overlays/dev}"
case "$overlay" in /*) ;; *) overlay="$here/$overlay" ;; esac
secrets="$overlay/secrets"
[ -d "$secrets" ] || { echo "make-dev-secrets: no folder $secrets" >&2; exit 1; }

python3 - "$secrets" <<'PY'
import base64
import hashlib
import os
import re
import secrets
import sys
from pathlib import Path

folder = Path(sys.argv[1])
examples = sorted(folder.glob("*.example"))
if not examples:
    sys.exit(f"make-dev-secrets: no *.example in {folder}")
targets = [e.with_name(e.name.removesuffix(".example")) for e in examples]
present = [t for t in targets if t.exists()]
if len(present) == len(targets):
    print(f"make-dev-secrets: {folder}: every secret file exists, nothing to do")
    sys.exit(0)
if present:
    sys.exit(
        f"make-dev-secrets: {folder} has only some secret files ({', '.join(p.name for p in present)}): "
        "remove them or write the missing ones by hand, so the passwords stay consistent"
    )

values: dict[str, str] = {}


def fresh(match: re.Match[str]) -> str:
    name = match.group(0)
    if name not in values:
        if name.endswith("fernet-key"):
            values[name] = base64.urlsafe_b64encode(os.urandom(32)).decode()
        else:
            values[name] = secrets.token_urlsafe(24)
    return values[name]


for example, target in zip(examples, targets):
    text = re.sub(r"change-me(?:-[a-z0-9]+)*", fresh, example.read_text())
    text = re.sub(
        r"sha256-of:(\S+)", lambda m: "sha256:" + hashlib.sha256(m[1].encode()).hexdigest(), text
    )
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    print(f"make-dev-secrets: wrote {target}")
PY
