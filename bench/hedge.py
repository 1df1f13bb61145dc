#!/usr/bin/env python3
"""Hedged requests against a slow tail (issue 21), run by hand.

Two mock upstreams on loopback: `a` answers its first byte after --slow-ms for --slow-percent
of its requests (evenly spread), `b` answers at once. The gateway (release build) serves two
virtual models over [a, b] with the priority strategy: `plain` without hedging and `hedged`
with `hedge: {after_ms, budget_percent}`. Each is sent --requests chat requests from
--concurrency client threads; the time to first byte is measured per request (socket write to
the first response byte). Prints p50/p90/p99/max for both, their ratio, and the extra upstream
requests the hedges made (from /metrics) against the budget.

Build first: cargo build --release -p modelgate -p mock-upstream
Usage: python3 bench/hedge.py [--requests 500] [--concurrency 8] [--after-ms 300]
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ports import free_port, wait_listening as wait_port  # noqa: E402

def ttfb(port, model):
    """Seconds from the request's write to the answer's first byte; the answer is read whole."""
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    req = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode() + body
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.perf_counter()
    s.sendall(req)
    first = s.recv(65536)
    t1 = time.perf_counter()
    data = first
    while True:
        more = s.recv(65536)
        if not more:
            break
        data += more
    s.close()
    status = int(data.split(b" ", 2)[1])
    if status != 200:
        raise RuntimeError(f"{model}: status {status}: {data[:300]!r}")
    return t1 - t0


def run(port, model, n, concurrency):
    out = []
    errors = []
    lock = threading.Lock()
    left = [n]

    def worker():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            try:
                t = ttfb(port, model)
            except Exception as e:  # reported below: a thread cannot exit the script
                with lock:
                    errors.append(e)
                return
            with lock:
                out.append(t)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit(f"{len(errors)} request(s) failed; the first: {errors[0]}")
    return sorted(out)


def pct(xs, p):
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--after-ms", type=int, default=300)
    ap.add_argument("--budget-percent", type=float, default=25)
    ap.add_argument("--slow-percent", type=int, default=20)
    ap.add_argument("--slow-ms", type=int, default=2000)
    ap.add_argument("--bin-dir", default=RELEASE,
                    help="where modelgate and mock-upstream are (default target/release)")
    a = ap.parse_args()
    a.bin_dir = os.path.abspath(a.bin_dir)

    procs = []
    try:
        ports = {"a": free_port(), "b": free_port()}
        for name, port in ports.items():
            cmd = [
                os.path.join(a.bin_dir, "mock-upstream"),
                "--listen", f"127.0.0.1:{port}",
                "--models", f"bench-{name}",
            ]
            if name == "a":
                cmd += ["--slow-percent", str(a.slow_percent),
                        "--slow-first-byte-ms", str(a.slow_ms)]
            procs.append(subprocess.Popen(cmd, stderr=subprocess.DEVNULL))
            wait_port(port, procs[-1], f"mock {name}")
        gw_port = free_port()
        tmp = tempfile.mkdtemp()
        cfg = os.path.join(tmp, "config.yaml")
        with open(cfg, "w") as f:
            f.write("providers:\n")
            for name, port in ports.items():
                f.write(
                    f"  {name}:\n    type: openai_compatible\n"
                    f"    base_url: http://127.0.0.1:{port}/v1\n    api_key: k\n"
                    f"    models: [bench-{name}]\n"
                )
            f.write(
                "virtual_models:\n"
                "  - source: plain\n    strategy: priority\n"
                "    targets: [a/bench-a, b/bench-b]\n"
                "  - source: hedged\n    strategy: priority\n"
                "    targets: [a/bench-a, b/bench-b]\n"
                f"    hedge: {{after_ms: {a.after_ms}, max_extra: 1, "
                f"budget_percent: {a.budget_percent}}}\n"
            )
        env = {"PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn",
               "SQLITE_PATH": os.path.join(tmp, "store.db")}
        gw = subprocess.Popen(
            [os.path.join(a.bin_dir, "modelgate"), "--config", cfg,
             "--listen", f"127.0.0.1:{gw_port}"],
            env=env, cwd=tmp, stderr=subprocess.DEVNULL,
        )
        procs.append(gw)
        wait_port(gw_port, gw, "modelgate")
        deadline = time.time() + 30
        while time.time() < deadline:
            ok = subprocess.run(
                ["curl", "-sf", f"http://127.0.0.1:{gw_port}/health"],
                capture_output=True,
            ).returncode == 0
            if ok:
                break
            time.sleep(0.1)
        # Warm the pools.
        run(gw_port, "b/bench-b", 20, 4)

        plain = run(gw_port, "plain", a.requests, a.concurrency)
        hedged = run(gw_port, "hedged", a.requests, a.concurrency)
        metrics = subprocess.run(
            ["curl", "-s", f"http://127.0.0.1:{gw_port}/metrics"],
            capture_output=True, text=True,
        ).stdout
        hedges = {
            m.group(1): int(m.group(2))
            for m in re.finditer(
                r'modelgate_hedges_total\{virtual_model="hedged",outcome="(\w+)"\} (\d+)',
                metrics,
            )
        }
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait()

    def row(name, xs):
        return (f"{name:<8} p50 {pct(xs, 50) * 1000:8.1f} ms  p90 {pct(xs, 90) * 1000:8.1f} ms  "
                f"p99 {pct(xs, 99) * 1000:8.1f} ms  max {xs[-1] * 1000:8.1f} ms")

    print(f"{a.requests} requests per model, concurrency {a.concurrency}; upstream a: "
          f"{a.slow_percent}% of answers after {a.slow_ms} ms; hedge after {a.after_ms} ms, "
          f"budget {a.budget_percent}%")
    print(row("plain", plain))
    print(row("hedged", hedged))
    print(f"p99 ratio plain/hedged: {pct(plain, 99) / pct(hedged, 99):.1f}x")
    extra = hedges.get("won", 0) + hedges.get("lost", 0)
    print(f"hedges: won {hedges.get('won', 0)}, lost {hedges.get('lost', 0)}, "
          f"denied {hedges.get('denied', 0)}; extra upstream requests {extra} of "
          f"{a.requests} requests = {100 * extra / a.requests:.1f}% (budget {a.budget_percent}%)")


if __name__ == "__main__":
    main()
