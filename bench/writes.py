#!/usr/bin/env python3
"""Socket writes per proxied request, counted by strace (run by hand).

Each target runs in front of the bench mock upstream (which chunks its small answers, as many
providers do); strace attaches to the running proxy, N sequential keep-alive requests go through
it, and the write system calls of every thread (`sendto`, `sendmsg`, `write`, `writev`) are
divided by N. The mock and the client are not traced.

    cargo build --release -p modelgate -p mock-upstream -p pingora-passthrough
    python3 bench/writes.py                          # modelgate and the bare Pingora pass-through
    python3 bench/writes.py --targets nginx,modelgate --n 300 --body stream
    python3 bench/writes.py --build mg-old=modelgate:/tmp/old/modelgate --targets modelgate,mg-old

Needs strace (Debian package `strace`). Everything listens on 127.0.0.1.
"""

import argparse
import http.client
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (MOCK_PORT, PORTS, descendants, parse_builds, start_mock,  # noqa: E402
                 start_target, stop)

BODIES = {
    "small": {"model": "bench", "messages": [
        {"role": "user", "content": "Write a haiku about load balancers."}]},
    "stream": {"model": "bench", "stream": True, "messages": [
        {"role": "user", "content": "Write a haiku about load balancers."}]},
}
CALLS = ("sendto", "sendmsg", "write", "writev")


def requests(port, n, body):
    """N sequential requests on one keep-alive connection; every answer read whole."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = json.dumps(body).encode()
    for _ in range(n):
        conn.request("POST", "/v1/chat/completions", body=data,
                     headers={"content-type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            sys.exit(f"port {port}: status {resp.status}")
    conn.close()


def count(pid, port, n, body):
    """Write system calls per request of process `pid` while N requests go through `port`."""
    requests(port, 20, body)  # warm: pooled upstream connections, lazy state
    out = Path(tempfile.mkdtemp()) / "strace.txt"
    tracer = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=" + ",".join(CALLS),
                               "-o", str(out), "-p", str(pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # strace attaches to every thread
    requests(port, n, body)
    time.sleep(0.3)
    tracer.terminate()
    tracer.wait(timeout=10)
    calls = {}
    for line in out.read_text().splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) in CALLS:
            calls[m.group(2)] = int(m.group(1))
    return {k: v / n for k, v in calls.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default="pingora,modelgate")
    p.add_argument("--n", type=int, default=300, help="requests counted per target")
    p.add_argument("--body", choices=sorted(BODIES), default="small")
    p.add_argument("--build", dest="builds", action="append", default=[], metavar="NAME=KIND:PATH")
    args = p.parse_args()
    if not shutil.which("strace"):
        sys.exit("strace is not installed (Debian package strace)")
    args.builds = parse_builds(args.builds)
    args.pin, args.workers = False, 1
    args.out = Path(tempfile.mkdtemp(prefix="modelgate-writes-"))
    for i, name in enumerate(args.builds):
        PORTS[name] = 19700 + 10 * i
    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        if t not in PORTS:
            sys.exit(f"unknown target {t!r}; use one of {', '.join(sorted(PORTS))}")
    mock = start_mock(args, MOCK_PORT)
    try:
        print(f"| target | {' | '.join(CALLS)} | all writes |")
        print("|---|" + "---|" * (len(CALLS) + 1))
        for t in targets:
            proc = start_target(t, args, MOCK_PORT, "writes")
            try:
                per = count(proc.pid, PORTS[t], args.n, BODIES[args.body])
            finally:
                stop(proc)
            cells = " | ".join(f"{per.get(c, 0):.2f}" for c in CALLS)
            print(f"| {t} | {cells} | {sum(per.values()):.2f} |", flush=True)
    finally:
        stop(mock)


if __name__ == "__main__":
    main()
