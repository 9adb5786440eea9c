#!/usr/bin/env python3
"""Latency of the example app when its Redis dies or pauses under load.

Starts its own redis-server and the release build of the example app
(`cargo build --release -p axum-example` first), keeps 16 clients sending
`GET /products/{id}` (ids drawn from 1..=200, so L1 hits and misses mix),
then kills Redis (or pauses it with `CLIENT PAUSE`) and reports the latency
percentiles of the 500 requests that complete next, beside those of the
500 before.

    python3 benches/load/redis_outage.py                 # L1 + L2, Redis killed
    python3 benches/load/redis_outage.py --l1 off        # Redis alone
    python3 benches/load/redis_outage.py --fault pause   # CLIENT PAUSE instead
"""

import argparse
import http.client
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENTS = 16
WINDOW = 500


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline=30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--l1", choices=["on", "off"], default="on")
    parser.add_argument("--fault", choices=["kill", "pause"], default="kill")
    args = parser.parse_args()

    work = tempfile.mkdtemp()
    redis_port, app_port = free_port(), free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--save", "", "--dir", work],
        stdout=subprocess.DEVNULL,
    )
    wait_port(redis_port)
    env = dict(os.environ, BIND=f"127.0.0.1:{app_port}",
               REDIS_URL=f"redis://127.0.0.1:{redis_port}", RUST_LOG="warn")
    if args.l1 == "off":
        env["CACHE_L1"] = "off"
    app = subprocess.Popen([os.path.join(ROOT, "target/release/axum-example")], env=env,
                           stdout=subprocess.DEVNULL)
    wait_port(app_port)

    lock = threading.Lock()
    done = []  # (finished at, seconds, status)
    stop = threading.Event()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", app_port, timeout=10)
        while not stop.is_set():
            start = time.monotonic()
            try:
                conn.request("GET", f"/products/{random.randint(1, 200)}")
                res = conn.getresponse()
                res.read()
                status = res.status
            except OSError:
                conn = http.client.HTTPConnection("127.0.0.1", app_port, timeout=10)
                status = 0
            end = time.monotonic()
            with lock:
                done.append((end, end - start, status))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(3)  # warm: L1 and Redis hold the 200 products
    fault_at = time.monotonic()
    if args.fault == "kill":
        redis.kill()
    else:
        subprocess.run(["redis-cli", "-p", str(redis_port), "CLIENT", "PAUSE", "30000", "ALL"],
                       check=True, stdout=subprocess.DEVNULL)
    while True:
        with lock:
            after = [d for d in done if d[0] > fault_at]
        if len(after) >= WINDOW:
            break
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    app.kill()
    redis.kill()

    with lock:
        before = [d for d in done if d[0] <= fault_at][-WINDOW:]
        after = [d for d in done if d[0] > fault_at][:WINDOW]
    for name, window in (("before", before), ("after", after)):
        ms = [d[1] * 1000 for d in window]
        failed = sum(1 for d in window if d[2] != 200)
        print(f"{name:6} {len(ms)} requests: p50 {percentile(ms, 50):.1f} ms, "
              f"p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms, non-200 {failed}")


if __name__ == "__main__":
    main()
