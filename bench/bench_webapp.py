"""Load-test the web app: waitress (``python -m helpers.webapp``) against the development server.

    python bench/bench_webapp.py --model book/runs/smoke/models/RUN/tflite/int8.tflite
    python bench/bench_webapp.py --model RUN/model.keras --requests 300 --concurrency 8

Starts each server as a subprocess on a free 127.0.0.1 port, warms it up, then sends
``--rounds`` rounds of ``--requests`` uploads of one real lesion photo (``POST /api/predict``)
from ``--concurrency`` client threads. Per round it prints throughput, p50/p95/p99 latency,
errors and the server's RSS before and after; then waitress's figures (all rounds pooled) as
ratios of the development server's, measured in the same run. Exit status 1 if any request failed or the
server's RSS grew by more than ``--max-rss-growth-mb`` from the end of the first round to the
end of the last (a leak). Client and server share the machine: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process now (VmRSS), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def start(model: Path, options: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """``python -m helpers.webapp --model MODEL --port 0 OPTIONS``: the process and its URL."""
    command = [sys.executable, "-m", "helpers.webapp", "--model", str(model), "--port", "0"]
    with log.open("w") as out:
        process = subprocess.Popen(command + options, cwd=REPO, stdout=out,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not (found := re.search(r"http://127\.0\.0\.1:\d+/", log.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"the server did not start:\n{log.read_text()}")
        time.sleep(0.2)
    return process, found.group(0)


def load(url: str, photo: bytes, n: int, concurrency: int) -> dict:
    """``n`` uploads from ``concurrency`` threads (one keep-alive HTTP session each, closed at
    the end, as clients that are done do): timings and errors."""
    local, sessions = threading.local(), []

    def one(_):
        if not hasattr(local, "session"):
            local.session = requests.Session()
            sessions.append(local.session)
        session = local.session
        started = time.perf_counter()
        try:
            reply = session.post(url + "api/predict", files={"image": ("lesion.jpg", photo)},
                                 timeout=60)
            ok = reply.status_code == 200 and "predicted_class" in reply.json()
        except requests.RequestException:
            ok = False
        return time.perf_counter() - started, ok

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - started
    for session in sessions:
        session.close()
    latency = np.array([seconds for seconds, _ in results]) * 1000
    return {**summary(latency, wall), "latency": latency, "wall": wall,
            "errors": sum(not ok for _, ok in results)}


def summary(latency: np.ndarray, wall: float) -> dict:
    """Throughput (requests per second) and latency percentiles (ms)."""
    return {"throughput": len(latency) / wall, "p50": np.percentile(latency, 50),
            "p95": np.percentile(latency, 95), "p99": np.percentile(latency, 99)}


def bench(model: Path, options: list[str], photo: bytes, args: argparse.Namespace) -> list[dict]:
    """Every round's figures for one server."""
    with tempfile.TemporaryDirectory(prefix="bench-webapp-") as tmp:
        process, url = start(model, options, Path(tmp) / "server.log")
        try:
            load(url, photo, args.warmup, args.concurrency)
            rounds = []
            for _ in range(args.rounds):
                before = rss_mb(process.pid)
                figures = load(url, photo, args.requests, args.concurrency)
                rounds.append({**figures, "rss_before": before, "rss_after": rss_mb(process.pid)})
            return rounds
        finally:
            process.terminate()
            process.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help=".keras or .tflite model")
    parser.add_argument("--image", type=Path, default=None,
                        help="photo to upload (default: the first HAM10000 image found)")
    parser.add_argument("--requests", type=int, default=300, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=20, help="requests before measuring")
    parser.add_argument("--threads", type=int, default=None,
                        help="waitress worker threads (default: the web app's default)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=5.0,
                        help="allowed RSS growth from the first round's end to the last's")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(f"--model {args.model}: file not found")
    if min(args.requests, args.concurrency, args.rounds) < 1 or args.warmup < 0:
        parser.error("--requests, --concurrency and --rounds must be at least 1")
    if args.image is None:
        from helpers.config import data_root

        found = sorted((data_root() / "ham10000" / "images").glob("*.jpg"))[:1]
        if not found:
            parser.error(f"no HAM10000 image under {data_root()}: pass --image PHOTO")
        args.image = found[0]
    photo = args.image.read_bytes()

    print(f"{args.model.name}: {args.rounds} rounds of {args.requests} uploads of "
          f"{args.image.name} ({len(photo) / 1024:.1f} KB), concurrency {args.concurrency}, "
          f"127.0.0.1")
    waitress = ["--threads", str(args.threads)] if args.threads else []
    results = {name: bench(args.model, options, photo, args)
               for name, options in (("waitress", waitress), ("development", ["--debug"]))}
    print(f"{'server':<12} {'round':>5} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
          f"{'errors':>6} {'RSS MB before':>13} {'after':>6}")
    for name, rounds in results.items():
        for i, r in enumerate(rounds, 1):
            print(f"{name:<12} {i:>5} {r['throughput']:>7.1f} {r['p50']:>7.1f} {r['p95']:>7.1f} "
                  f"{r['p99']:>7.1f} {r['errors']:>6} {r['rss_before']:>13.1f} "
                  f"{r['rss_after']:>6.1f}")
    fast, dev = ({**summary(np.concatenate([r["latency"] for r in rounds]),
                            sum(r["wall"] for r in rounds)), "rss_after": rounds[-1]["rss_after"]}
                 for rounds in results.values())
    print(f"waitress / development server (all rounds): throughput "
          f"{fast['throughput'] / dev['throughput']:.2f}x, p50 {fast['p50'] / dev['p50']:.2f}x, "
          f"p95 {fast['p95'] / dev['p95']:.2f}x, p99 {fast['p99'] / dev['p99']:.2f}x, "
          f"RSS {fast['rss_after'] / dev['rss_after']:.2f}x")
    growth = {name: rounds[-1]["rss_after"] - rounds[0]["rss_after"]
              for name, rounds in results.items()}
    checks = {"no errors": all(r["errors"] == 0 for rs in results.values() for r in rs),
              f"waitress RSS growth after round 1 <= {args.max_rss_growth_mb:g} MB "
              f"({growth['waitress']:+.1f} MB)": growth["waitress"] <= args.max_rss_growth_mb}
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
