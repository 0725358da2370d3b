#!/usr/bin/env bash
# Write api-keys, the API's key file (Compose secret api-keys), from the keys in .env: the
# UI's (READMIT_UI_API_KEY) and the load test's (READMIT_LOADTEST_API_KEY), scope predict.
# Lines of other keys (added by hand, e.g. `ward-7 predict sha256:...`) are kept.
#
#   deploy/compose/make-api-keys.sh [ENV_FILE]     # default: .env beside this script
#
# The file holds SHA-256 digests, never keys, and is readable by the API's user (uid 10001
# in the container, which sees it through a bind mount: mode 0644). It is rewritten in
# place, so a running API re-reads it within a second.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 - "${1:-$here/.env}" "$here/api-keys" <<'PY'
import hashlib
import os
import sys
from pathlib import Path

env_file, target = Path(sys.argv[1]), Path(sys.argv[2])
WRITTEN = {"ui": "READMIT_UI_API_KEY", "loadtest": "READMIT_LOADTEST_API_KEY"}
if not env_file.exists():
    sys.exit(f"make-api-keys: no {env_file} (cp .env.example .env, then set its values)")
values = {}
for line in env_file.read_text().splitlines():
    name, sep, value = line.strip().partition("=")
    if sep and not name.startswith("#"):
        values[name.strip()] = value.strip().strip("'\"")
lines = []
if target.exists():
    lines = [
        line
        for line in target.read_text().splitlines()
        if line.split("#", 1)[0].split()[:1] not in ([k] for k in WRITTEN)
    ]
for name, variable in WRITTEN.items():
    key = values.get(variable, "")
    if not key or key.startswith("change-me"):
        sys.exit(f"make-api-keys: set {variable} in {env_file} first")
    lines.append(f"{name} predict sha256:{hashlib.sha256(key.encode()).hexdigest()}")
fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
with os.fdopen(fd, "w") as out:
    out.truncate()
    out.write("\n".join(lines) + "\n")
os.chmod(target, 0o644)
print(f"make-api-keys: wrote {target} ({', '.join(WRITTEN)} and {len(lines) - len(WRITTEN)} other line(s))")
PY
