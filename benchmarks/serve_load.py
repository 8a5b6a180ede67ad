"""Load test of ``diffguard serve``: N concurrent REST clients for a fixed time on loopback, against offline scoring.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/serve_load.py GUARD_DIR --clients 8 --seconds 30 --batch-size 4

1. Offline: ``guard.score`` on batches of ``--batch-size`` images for ``--seconds`` (images/s), before the server
   starts, with the server's torch threads.
2. Starts ``diffguard serve GUARD_DIR`` on free loopback ports (adaptive batching: ``--max-batch-images``,
   ``--max-batch-time``), waits until the model is ready.
3. ``--clients`` threads each send requests of ``--batch-size`` images (FP32 JSON, encoded once beforehand) one
   after another until ``--seconds`` have passed, then wait for their last answer (timeout ``--timeout``).
4. Stops the server and prints one Markdown table: requests sent / answered / 2xx / 4xx / 5xx / lost (no answer),
   p50 and p99 latency, served images/s, offline images/s, their ratio (goal: >= 0.8) and the mean images per
   scoring call (from the server's ``diffguard_batch_images`` metric: how much adaptive batching merged).

Works with any guard folder (images are random pixels in [-1, 1] of the guard's input shape, or the files of ``--images DIR``). Traffic goes to
127.0.0.1 only; every loop is bounded by ``--seconds`` and each request by ``--timeout``. Exit status 1 when a
request was lost or got a 5xx.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from diffguard.guard.guard import Guard
from diffguard.guard.inputs import read_files
from diffguard.sysinfo import machine

MODEL = "load"
POOL_BATCHES = 16


@dataclass
class Tally:
    """What the clients saw (shared, under a lock)."""

    sent: int = 0
    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    lost: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("guard_dir", type=Path, help="a guard folder")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long clients send, and offline runs (default 30)")
    p.add_argument("--batch-size", type=int, default=4, help="images per request and per offline call (default: 4)")
    p.add_argument("--threads", type=int, default=None, help="torch threads, offline and in the server "
                   "(default: the number of CPU cores)")
    p.add_argument("--max-batch-images", type=int, default=32, help="the server's adaptive batching (default: 32)")
    p.add_argument("--max-batch-time", type=float, default=0.01, help="the server's adaptive batching (default: 0.01)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: 120)")
    p.add_argument("--images", type=Path, default=None, help="a folder of image files to send (read as the guard "
                   "reads files, cycled); default: random pixels, which a cascade's baseline may settle alone")
    return p.parse_args(argv)


def batches(shape: tuple[int, int, int], batch_size: int) -> list[torch.Tensor]:
    """A pool of random image batches in [-1, 1] (the same for offline and served)."""
    g = torch.Generator().manual_seed(0)
    return [torch.rand(batch_size, *shape, generator=g) * 2 - 1 for _ in range(POOL_BATCHES)]


def file_batches(guard: Guard, folder: Path, batch_size: int) -> list[torch.Tensor]:
    """The readable image files of ``folder`` (sorted) in batches of ``batch_size`` (the last partial one dropped)."""
    read = read_files(sorted(p for p in folder.iterdir() if p.is_file()), guard.geometry)
    n = len(read.ok) // batch_size * batch_size
    if n == 0:
        raise SystemExit(f"{folder} holds fewer than {batch_size} readable images")
    return list(read.images[:n].split(batch_size))


def offline_rate(guard: Guard, pool: list[torch.Tensor], seconds: float) -> float:
    """Images per second of ``guard.score`` on the pool's batches, one after another, for ``seconds``."""
    guard.score(pool[0])  # warm-up, as the server's
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done == 0:
        done += len(guard.score(pool[(done // len(pool[0])) % len(pool)]).score)
    return done / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace, threads: int, folder: Path) -> tuple[subprocess.Popen, int, int]:
    """``diffguard serve`` on free loopback ports; (process, REST port, metrics port) once the model is ready."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [sys.executable, "-m", "diffguard", "serve", str(args.guard_dir), "--name", MODEL, "--port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--settings-dir", str(folder / "settings"),
           "--threads", str(threads), "--max-batch-images", str(args.max_batch_images),
           "--max-batch-time", str(args.max_batch_time),
           "--max-request-images", str(max(args.batch_size, 256))]
    log = open(folder / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/{MODEL}/ready", timeout=2) as r:
                if r.status == 200:
                    return proc, http, metrics
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    stop(proc)
    sys.exit(f"the server did not become ready; its log: {folder / 'server.log'}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def client(url: str, bodies: list[bytes], until: float, timeout: float, tally: Tally, offset: int) -> None:
    """Send requests one after another until ``until`` (monotonic), recording status and latency."""
    i = offset
    while time.monotonic() < until:
        req = urllib.request.Request(url, bodies[i % len(bodies)], {"content-type": "application/json"})
        i += 1
        with tally.lock:
            tally.sent += 1
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                r.read()
                status = r.status
        except urllib.error.HTTPError as err:
            status = err.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            with tally.lock:
                tally.lost += 1
            continue
        with tally.lock:
            tally.statuses.append(status)
            tally.latencies.append(time.perf_counter() - start)


def run_clients(args: argparse.Namespace, http: int, pool: list[torch.Tensor]) -> tuple[Tally, float]:
    """(what the clients saw, wall seconds from the first request to the last answer)."""
    bodies = [json.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": list(x.shape),
                                      "data": x.flatten().tolist()}]}).encode() for x in pool]
    url = f"http://127.0.0.1:{http}/v2/models/{MODEL}/infer"
    tally = Tally()
    start = time.monotonic()
    with ThreadPoolExecutor(args.clients) as threads:
        for c in range(args.clients):
            threads.submit(client, url, bodies, start + args.seconds, args.timeout, tally, c)
    return tally, time.monotonic() - start


def mean_batch(metrics_port: int) -> float:
    """Mean images per scoring call of the served model (the diffguard_batch_images histogram)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    value = {name: float(line.rsplit(" ", 1)[1]) for line in lines for name in ("_sum{", "_count{")
             if line.startswith("diffguard_batch_images" + name) and f'model_name="{MODEL}"' in line}
    return value["_sum{"] / value["_count{"] if value.get("_count{") else float("nan")


def table(args: argparse.Namespace, tally: Tally, wall: float, offline: float, batch: float) -> str:
    codes = np.array(tally.statuses)
    ok = int(((codes >= 200) & (codes < 300)).sum())
    served = ok * args.batch_size / wall
    lat = np.array(tally.latencies) * 1000 if tally.latencies else np.array([np.nan])
    row = [args.clients, args.batch_size, f"{args.seconds:g}", tally.sent, len(codes), ok,
           int(((codes >= 400) & (codes < 500)).sum()), int((codes >= 500).sum()), tally.lost,
           f"{np.percentile(lat, 50):.0f}", f"{np.percentile(lat, 99):.0f}", f"{served:.2f}", f"{offline:.2f}",
           f"{served / offline:.2f}x", f"{batch:.1f}"]
    head = ["clients", "images / request", "seconds", "sent", "answered", "2xx", "4xx", "5xx", "lost",
            "p50 ms", "p99 ms", "served images/s", "offline images/s", "served / offline", "images / scoring call"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|",
             "| " + " | ".join(str(c) for c in row) + " |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    guard = Guard.load(args.guard_dir, device="cpu")
    pool = (file_batches(guard, args.images, args.batch_size) if args.images
            else batches(guard.input_shape, args.batch_size))
    offline = offline_rate(guard, pool, args.seconds)
    print(f"offline: {offline:.2f} images/s (batches of {args.batch_size}, {threads} threads)", file=sys.stderr)
    del guard
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        proc, http, metrics = start_server(args, threads, Path(tmp))
        try:
            tally, wall = run_clients(args, http, pool)
            batch = mean_batch(metrics)
        finally:
            stop(proc)
    print(f"\n`diffguard serve` under load, guard {args.guard_dir}, max_batch_images {args.max_batch_images}, "
          f"max_batch_time {args.max_batch_time} s\n")
    print(table(args, tally, wall, offline, batch))
    print(f"\nmachine: {machine()}")
    bad = tally.lost + sum(1 for s in tally.statuses if s >= 500)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
