"""Load test of `lift-search serve`: concurrent clients against the HTTP API on this machine.

    python bench/serve_load.py --index /tmp/demo/index             # `lift-search demo --out /tmp/demo` builds it
    python bench/serve_load.py --index IDX --clients 1,8,32 --seconds 20 --max-requests 20000

Starts `lift-search serve` as a subprocess, then for each number of concurrent clients runs that many
asyncio clients (one httpx connection each, keep-alive) for `--seconds` (or until `--max-requests`),
after a short warm-up. Each client loops over a mix of the model-free requests a tool makes: 70 % clip
searches (`GET /search?clip=ID`, random clip, k=10, random motion weight, a third of them reverse),
15 % library pages (`GET /clips?offset=&limit=50`), 10 % thumbnails, 5 % single clips. Latency is
measured by the client (request sent to body read); an error is any transport error or a status other
than 200. Client and server share the machine's cores. Prints a table; writes JSON (default
bench/results/serve_load.json).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
MIX = (("search", 0.70), ("page", 0.15), ("thumbnail", 0.10), ("clip", 0.05))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "serve", "--index", index, "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start in 120 s")


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


async def level(url: str, ids: list[int], clients: int, seconds: float, max_requests: int, warmup: float,
                seed: int) -> dict:
    """Run `clients` concurrent clients; latencies (ms) per kind of request, errors, wall seconds."""
    lat, errors, done = defaultdict(list), defaultdict(int), [0]
    kinds, weights = zip(*MIX)

    async def client(i: int, deadline: float, record: bool):
        rng = random.Random(seed * 1000 + i)
        async with httpx.AsyncClient(base_url=url, timeout=60,
                                     limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)) as c:
            while time.monotonic() < deadline and (not record or done[0] < max_requests):
                kind = rng.choices(kinds, weights)[0]
                if kind == "search":
                    params = {"clip": rng.choice(ids), "k": 10, "motion": round(rng.random(), 2),
                              "reverse": str(rng.random() < 1 / 3).lower()}
                    req = c.get("/search", params=params)
                elif kind == "page":
                    req = c.get("/clips", params={"offset": rng.randrange(max(1, len(ids) - 50) + 1), "limit": 50})
                else:
                    req = c.get(f"/clips/{rng.choice(ids)}" + ("/thumbnail" if kind == "thumbnail" else ""))
                t = time.perf_counter()
                try:
                    r = await req
                    ok = r.status_code == 200 and len(r.content) > 0
                except httpx.HTTPError:
                    ok = False
                ms = (time.perf_counter() - t) * 1000
                if record:
                    done[0] += 1
                    lat[kind].append(ms)
                    if not ok:
                        errors[kind] += 1

    if warmup > 0:
        await asyncio.gather(*(client(i, time.monotonic() + warmup, False) for i in range(clients)))
    t0 = time.monotonic()
    await asyncio.gather(*(client(i, t0 + seconds, True) for i in range(clients)))
    return {"lat": lat, "errors": errors, "wall_s": time.monotonic() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", required=True, help="an index folder (the demo's: lift-search demo --out DIR)")
    p.add_argument("--clients", default="1,8,32", help="concurrent clients per level (default %(default)s)")
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds per level (default %(default)s)")
    p.add_argument("--max-requests", type=int, default=20000, help="at most this many requests a level")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each level")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "serve_load.json"))
    a = p.parse_args()

    port = free_port()
    proc = start_server(a.index, port)
    url = f"http://127.0.0.1:{port}"
    try:
        first = httpx.get(url + "/clips", params={"limit": 1000}).json()
        ids = [c["clip_id"] for c in first["clips"]]
        rows = []
        for n in [int(x) for x in a.clients.split(",")]:
            res = asyncio.run(level(url, ids, n, a.seconds, a.max_requests, a.warmup, seed=n))
            every = [ms for xs in res["lat"].values() for ms in xs]
            row = {"clients": n, "requests": len(every), "errors": sum(res["errors"].values()),
                   "requests_per_s": round(len(every) / res["wall_s"], 1),
                   "p50_ms": round(percentile(every, 50), 2), "p99_ms": round(percentile(every, 99), 2),
                   "search_p50_ms": round(percentile(res["lat"]["search"], 50), 2),
                   "search_p99_ms": round(percentile(res["lat"]["search"], 99), 2),
                   "by_kind": {k: {"requests": len(v), "errors": res["errors"][k],
                                   "p50_ms": round(percentile(v, 50), 2), "p99_ms": round(percentile(v, 99), 2),
                                   "mean_ms": round(statistics.fmean(v), 2) if v else None}
                               for k, v in res["lat"].items()}}
            rows.append(row)
            print(f"{n} clients: {row['requests']} requests, {row['errors']} errors, p50 {row['p50_ms']} ms, "
                  f"p99 {row['p99_ms']} ms", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(30)
    load = os.getloadavg()
    out = {"index": a.index, "clips": first["total"], "cpus": os.cpu_count(), "seconds_per_level": a.seconds,
           "mix": dict(MIX), "loadavg_1_5_15": [round(x, 2) for x in load], "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d"), "rows": rows}
    print(f"\n{first['total']}-clip index; {os.cpu_count()} CPUs shared by the clients and the server, "
          f"load average {load[0]:.1f}\n")
    print("| clients | requests | errors | req/s | p50 ms | p99 ms | search p50 ms | search p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['requests_per_s']} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['search_p50_ms']:.1f} | {r['search_p99_ms']:.1f} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
