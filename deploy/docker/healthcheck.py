"""Container health check: GET a URL and exit 0 when its status is one of the accepted codes.

    python /usr/local/bin/readmit-healthcheck URL [CODES]

CODES is a comma-separated list (default 200). The API answers /health with 503 while no
model is loaded, so its container check accepts 200 and 503: the process answers, which is
what Docker's health status (and the Kubernetes liveness probe) should mean; readiness
(a model is loaded) is Kubernetes' readiness probe on /health.
Standard library only: the slim images have no curl or wget.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def status_of(url: str, timeout: float = 4.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: readmit-healthcheck URL [CODES]", file=sys.stderr)
        return 2
    url = argv[1]
    accepted = {int(code) for code in (argv[2] if len(argv) == 3 else "200").split(",")}
    try:
        status = status_of(url)
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status not in accepted:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
