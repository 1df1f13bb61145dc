#!/usr/bin/env python3
"""User-space instructions per request, counted by valgrind's callgrind (run by hand).

Wall-clock throughput on a shared 2-core machine moves by 10% from run to run; instruction
counts repeat within about 50 per request (threads that wake on a timer add a little). Each target runs under callgrind in front of the mock upstream and gets N1, then
(a fresh process) N2 sequential keep-alive requests with the same body; the cost of one request
is (I(N2) - I(N1)) / (N2 - N1), which cancels start-up and shutdown. Only user-space
instructions are counted (system calls are not), so this measures the gateway's own work and
the framework's, not the kernel's socket path.

    cargo build --release -p modelgate -p mock-upstream -p pingora-passthrough
    python3 bench/instructions.py                     # modelgate and the bare Pingora floor
    python3 bench/instructions.py --body stream --targets modelgate
    MODELGATE_BIN=/path/to/other/modelgate python3 bench/instructions.py --targets modelgate
    python3 bench/instructions.py --targets modelgate --functions 40   # where they go
    python3 bench/instructions.py --per-event --targets pingora,modelgate --functions 30

`--per-event` counts one relayed stream event instead of one request: n1 streams of E1 events,
then (fresh processes, the mock restarted) n1 streams of E2 events, with `--chunk-delay-us`
between events so that each arrives alone, as a model's tokens do; the cost of one event is
(I(E2) - I(E1)) / (n1 * (E2 - E1)).

Needs valgrind (Debian package `valgrind`). Everything listens on 127.0.0.1.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RELEASE, ROOT, wait_port  # noqa: E402  (the load benchmark's helpers)

MOCK_PORT, TARGET_PORT = 19600, 19601

BODIES = {
    "small": {"model": "bench", "messages": [
        {"role": "user", "content": "Write a haiku about load balancers."}]},
    "stream": {"model": "bench", "stream": True, "messages": [
        {"role": "user", "content": "Write a haiku about load balancers."}]},
}


def requests(port, n, body):
    """n sequential requests on one keep-alive connection; every answer must be a 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    deadline = time.time() + 30
    while True:
        try:
            conn.connect()
            break
        except ConnectionRefusedError:
            # Under valgrind the listener can take a moment after the port first answered.
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    for i in range(n):
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"request {i}: status {resp.status}")
    conn.close()


def target_cmd(name, work, template=None):
    upstream = f"127.0.0.1:{MOCK_PORT}"
    listen = f"127.0.0.1:{TARGET_PORT}"
    if name == "pingora":
        binary = os.environ.get("PINGORA_BIN", str(RELEASE / "pingora-passthrough"))
        return [binary, "--listen", listen, "--upstream", upstream, "--threads", "1"], {}
    conf = work / "conf"
    conf.mkdir(exist_ok=True)
    text = Path(template or ROOT / "bench" / "modelgate.yaml.template").read_text()
    (conf / "config.yaml").write_text(text.replace("{{UPSTREAM}}", upstream))
    binary = os.environ.get("MODELGATE_BIN", str(RELEASE / "modelgate"))
    return ([binary, "--config", str(conf / "config.yaml"), "--listen", listen, "serve"],
            {"MODELGATE_THREADS": "1", "RUST_LOG": "info,pingora=warn"})


def count(name, n, body, work, template=None, tag=None):
    """Total instructions of one process that served n requests."""
    run = f"{tag}.{n}" if tag else f"{n}"
    out = work / f"callgrind.{name}.{run}.out"
    cmd, env = target_cmd(name, work, template)
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + cmd,
        cwd=work, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.{run}.log", "w"))
    try:
        wait_port(TARGET_PORT, proc)
        requests(TARGET_PORT, n, body)
    finally:
        # SIGINT: both stop at once (modelgate drains nothing: no request is in flight).
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    totals = [int(m.group(1)) for m in re.finditer(r"^totals:\s+(\d+)", out.read_text(), re.M)]
    if not totals:
        raise RuntimeError(f"no totals in {out}")
    return sum(totals)


def functions(work, name, n1, n2, inclusive, per=None):
    """Instructions per request of each function: its count in the n2 run less the n1 run
    (divided by `per` instead of n2 - n1 when given)."""
    def per_function(n):
        out = subprocess.run(
            ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
             "--threshold=100", str(work / f"callgrind.{name}.{n}.out")],
            capture_output=True, text=True, check=True).stdout
        counts = {}
        for line in out.splitlines():
            m = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.*)$", line)
            if m and ":" in m.group(2):
                fn = m.group(2).split(":", 1)[1].split(" [")[0].strip()
                counts[fn] = counts.get(fn, 0) + int(m.group(1).replace(",", ""))
        return counts
    a, b = per_function(n1), per_function(n2)
    per = per or (n2 - n1)
    return {fn: (b.get(fn, 0) - a.get(fn, 0)) / per for fn in b}


def start_mock(chunks, delay_us):
    mock = subprocess.Popen(
        [str(RELEASE / "mock-upstream"), "--listen", f"127.0.0.1:{MOCK_PORT}",
         "--chunk-delay-us", str(delay_us), "--chunks", str(chunks)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(MOCK_PORT, mock)
    return mock


def stop(mock):
    mock.terminate()
    mock.wait()


def per_event(args, body, work):
    """Rows of (target, instructions per relayed event), printing where they go if asked."""
    e1, e2 = args.events
    n = args.n1
    rows = []
    for name in args.targets.split(","):
        totals = []
        for e in (e1, e2):
            mock = start_mock(e, args.chunk_delay_us)
            try:
                totals.append(count(name, n, body, work, args.config, tag=f"e{e}"))
            finally:
                stop(mock)
        rows.append((name, (totals[1] - totals[0]) / (n * (e2 - e1))))
        if args.functions:
            per = functions(work, name, f"e{e1}.{n}", f"e{e2}.{n}", args.inclusive,
                            per=n * (e2 - e1))
            top = sorted(per.items(), key=lambda kv: -kv[1])[:args.functions]
            print(f"\n{name}: instructions per relayed event by function"
                  f" ({'inclusive' if args.inclusive else 'self'})")
            for fn, c in top:
                print(f"{c:>10,.0f}  {fn[:150]}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="pingora,modelgate")
    ap.add_argument("--body", choices=sorted(BODIES) + ["big"], default="small",
                    help="big: the load benchmark's 200 KB coding-agent body")
    ap.add_argument("--config", metavar="TEMPLATE",
                    help="modelgate's config ({{UPSTREAM}} is the mock's address) instead of "
                         "bench/modelgate.yaml.template")
    ap.add_argument("--model", help="the body's model (default: bench)")
    ap.add_argument("--n1", type=int, default=None,
                    help="requests in the first run (500; with --per-event, streams per run: 100)")
    ap.add_argument("--n2", type=int, default=2500)
    ap.add_argument("--functions", type=int, default=0, metavar="K",
                    help="also print the K functions with the most instructions per request")
    ap.add_argument("--keep", metavar="DIR",
                    help="leave the callgrind outputs in DIR (for callgrind_annotate)")
    ap.add_argument("--inclusive", action="store_true",
                    help="with --functions: count what each function calls too")
    ap.add_argument("--per-event", action="store_true",
                    help="count one relayed stream event (n1 streams of each --events count)")
    ap.add_argument("--events", type=lambda s: tuple(int(x) for x in s.split(",")),
                    default=(10, 60), metavar="E1,E2",
                    help="with --per-event: events per stream in the two runs (10,60)")
    ap.add_argument("--chunk-delay-us", type=int, default=1000,
                    help="with --per-event: the mock's pause between events (1000)")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is needed (Debian package `valgrind`)")
    with tempfile.TemporaryDirectory(prefix="modelgate-instructions-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.body == "big":
            from run import bodies  # noqa: E402
            data = json.loads(Path(bodies(work)["big"]).read_text())
        else:
            data = dict(BODIES[args.body])
        if args.model:
            data["model"] = args.model
        if args.per_event:
            data["stream"] = True
            args.n1 = args.n1 or 100
        args.n1 = args.n1 or 500
        body = json.dumps(data).encode()
        if args.per_event:
            rows = per_event(args, body, work)
            print("\n| target | instructions per relayed event |\n|---|---|")
            for name, per in rows:
                print(f"| {name} | {per:,.0f} |")
            return
        mock = subprocess.Popen(
            [str(RELEASE / "mock-upstream"), "--listen", f"127.0.0.1:{MOCK_PORT}",
             "--chunk-delay-us", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(MOCK_PORT, mock)
            rows = []
            for name in args.targets.split(","):
                a = count(name, args.n1, body, work, args.config)
                b = count(name, args.n2, body, work, args.config)
                rows.append((name, (b - a) / (args.n2 - args.n1)))
                if args.functions:
                    per = functions(work, name, args.n1, args.n2, args.inclusive)
                    top = sorted(per.items(), key=lambda kv: -kv[1])[:args.functions]
                    print(f"\n{name}: instructions per request by function"
                          f" ({'inclusive' if args.inclusive else 'self'})")
                    for fn, c in top:
                        print(f"{c:>10,.0f}  {fn[:150]}")
        finally:
            mock.terminate()
            mock.wait()
    print(f"\n| target | body | instructions per request |\n|---|---|---|")
    for name, per in rows:
        print(f"| {name} | {args.body} | {per:,.0f} |")


if __name__ == "__main__":
    main()
