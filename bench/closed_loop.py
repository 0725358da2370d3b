"""The closed-loop load the API benches share: replayed test rows as request bodies, and clients
that each send their next request as soon as they have an answer."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import numpy as np
import pandas as pd


def bodies_of(inputs: pd.DataFrame) -> list[dict]:
    """Request bodies from model inputs: missing as null, a fresh encounter each, three
    encounters per patient."""
    rows = json.loads(inputs.to_json(orient="records"))
    return [
        {
            **{k: (None if v == "?" else v) for k, v in r.items()},
            "encounter_id": 1_000_000 + i,
            "patient_nbr": 50_000_000 + i // 3,
        }
        for i, r in enumerate(rows)
    ]


async def closed_loop(url: str, bodies: list[dict], users: int, seconds: float) -> dict:
    """Every client sends its next request as soon as it has an answer."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient, seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            response = await client.post(url, json=bodies[rng.randrange(len(bodies))])
            latencies.append(time.perf_counter() - start)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        clock = time.perf_counter()
        await asyncio.gather(*(client_loop(client, i) for i in range(users)))
        elapsed = time.perf_counter() - clock
    ms = np.asarray(latencies) * 1000
    return {
        "n": len(latencies),
        "ok": len(latencies) - errors,
        "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "errors": errors,
    }
