#!/usr/bin/env python3
"""A requests-per-minute limit under 64 concurrent clients (issue 20), run by hand.

One mock upstream on loopback counts the completion requests it receives per Unix minute
(`mock-upstream --count-minutes`, read from its `GET /stats`). Gateways (release build) serve it
under one config limit, `{match: {key: bench}, rpm: RPM}`; each gateway has a managed key named
`bench` (POST /admin/api/v1/keys), which the clients present. Two runs:

- one gateway with its own (local) counters;
- three gateways sharing their counters through Redis (REDIS_URL, a key prefix of this run's own),
  the clients spread over the three.

Each run starts at a minute boundary (so --seconds 120 covers two whole limit windows) and has
--clients client threads sending chat requests on keep-alive connections as fast as they are
answered; after a 429 a client pauses --pause-ms (a client that ignored Retry-After entirely
would only add 429s). The target: per minute window, at most RPM upstream requests plus at most
one in-flight estimate (RPM + 1). The limiter's windows are minutes of the gateway's clock, a
coarse clock a few milliseconds behind: a request sent in the first milliseconds of a minute
may count in the window before. So each served answer is placed in the window that counted it,
from its `x-ratelimit-reset-requests` (seconds to that window's end), and that count is what
must hold. Prints per minute: served answers per limiter window, the upstream's count by its own
clock, the clients' 200s, 429s and others by send time, and whether the window holds.

Build first: cargo build --release -p modelgate -p mock-upstream
Usage: python3 bench/limits.py [--seconds 120] [--clients 64] [--rpm 100] [--runs 1,3]
"""

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
MASTER = "bench-master-key"


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ports import free_port, wait_listening as wait_port  # noqa: E402

def call(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    h = {"Content-Type": "application/json"} if data else {}
    h.update(headers or {})
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = (r.status, r.read().decode())
    c.close()
    return out


def wait_healthy(port, proc):
    wait_port(port, proc, "modelgate")
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if call(port, "GET", "/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"modelgate on {port} is not healthy")


def limiter_minute(sent, reset):
    """The limiter's window (a Unix minute) that counted an answer sent at `sent`, from its
    `x-ratelimit-reset-requests` (`12s`: seconds to that window's end, on the gateway's clock)."""
    try:
        left = int(reset.rstrip("s"))
    except (AttributeError, ValueError):
        return None
    return round((sent + left) / 60) - 1


def client(port, secret, until, pause, out, lock):
    """Sends chat requests until `until`; records (Unix minute at send, status, the limiter's
    window of a served request)."""
    body = json.dumps(
        {"model": "up/bench-a", "max_tokens": 16,
         "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}
    conn = None
    mine = []
    while time.time() < until:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        sent = time.time()
        try:
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            status = r.status
            window = limiter_minute(sent, r.getheader("x-ratelimit-reset-requests")) \
                if status == 200 else None
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = None
            status, window = 0, None
        mine.append((int(sent // 60), status, window))
        if status == 429:
            time.sleep(pause)
    if conn is not None:
        conn.close()
    with lock:
        out.extend(mine)


def metric(text, name):
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def run(a, instances):
    procs = []
    tmp = tempfile.mkdtemp()
    try:
        up_port = free_port()
        procs.append(subprocess.Popen(
            [os.path.join(a.bin_dir, "mock-upstream"), "--listen", f"127.0.0.1:{up_port}",
             "--models", "bench-a", "--count-minutes"],
            stderr=subprocess.DEVNULL,
        ))
        wait_port(up_port, procs[-1], "mock upstream")
        cfg = os.path.join(tmp, "config.yaml")
        with open(cfg, "w") as f:
            f.write(
                "providers:\n  up:\n    type: openai_compatible\n"
                f"    base_url: http://127.0.0.1:{up_port}/v1\n    api_key: k\n"
                "    models: [bench-a]\n"
                f"limits:\n  - match: {{key: bench}}\n    rpm: {a.rpm}\n"
            )
        prefix = f"modelgate-bench:{os.getpid()}:{int(time.time())}:"
        ports = []
        for i in range(instances):
            port = free_port()
            env = {"PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn",
                   "MODELGATE_MASTER_KEY": MASTER,
                   "SQLITE_PATH": os.path.join(tmp, f"store{i}.db")}
            if instances > 1:
                env.update({"REDIS_URL": a.redis, "REDIS_KEY_PREFIX": prefix})
            procs.append(subprocess.Popen(
                [os.path.join(a.bin_dir, "modelgate"), "--config", cfg,
                 "--listen", f"127.0.0.1:{port}"],
                env=env, cwd=tmp, stderr=open(os.path.join(tmp, f"gw{i}.log"), "w"),
            ))
            wait_healthy(port, procs[-1])
            ports.append(port)
        secrets = []
        for port in ports:
            status, text = call(port, "POST", "/admin/api/v1/keys", {"name": "bench"},
                                {"Authorization": f"Bearer {MASTER}"})
            if status != 201:
                sys.exit(f"creating the key: {status} {text}")
            secrets.append(json.loads(text)["key"])
        # Start at a minute boundary: --seconds 120 is two whole limit windows.
        start = (int(time.time() // 60) + 1) * 60 if a.align else time.time()
        time.sleep(max(0.0, start - time.time()))
        results, lock = [], threading.Lock()
        threads = [
            threading.Thread(target=client, args=(
                ports[i % instances], secrets[i % instances], start + a.seconds,
                a.pause_ms / 1000, results, lock))
            for i in range(a.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status, text = call(up_port, "GET", "/stats")
        upstream = {int(k): v for k, v in json.loads(text)["completions_by_minute"].items()}
        store_errors, refused = 0.0, 0.0
        for port in ports:
            m = call(port, "GET", "/metrics")[1]
            store_errors += metric(m, "modelgate_limits_store_errors_total") or 0
            refused += metric(m, 'modelgate_limits_refused_total{code="rate_limited"}') or 0
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    minutes = sorted(set(upstream) | {m for m, _, _ in results} |
                     {w for _, _, w in results if w is not None})
    label = "1 gateway, local counters" if instances == 1 else \
        f"{instances} gateways sharing Redis"
    print(f"\n{label}: {a.clients} clients, rpm {a.rpm}, {a.seconds} s")
    print("| minute (UTC) | served in the limiter's window | upstream requests (its clock) "
          "| client 200 / 429 / other (by send time) | holds (<= rpm + 1) |")
    print("|---|---|---|---|---|")
    ok = True
    unplaced = sum(1 for _, s, w in results if s == 200 and w is None)
    for m in minutes:
        served = sum(1 for _, _, w in results if w == m)
        st = [s for mm, s, _ in results if mm == m]
        holds = served <= a.rpm + 1
        ok &= holds
        print(f"| {time.strftime('%H:%M', time.gmtime(m * 60))} | {served} | "
              f"{upstream.get(m, 0)} | {st.count(200)} / {st.count(429)} / "
              f"{len(st) - st.count(200) - st.count(429)} | {'yes' if holds else 'NO'} |")
    if unplaced:
        ok = False
        print(f"{unplaced} served answer(s) without x-ratelimit-reset-requests")
    total = len(results)
    print(f"requests sent {total} ({total / a.seconds:.0f}/s), refused by the limit "
          f"{refused:.0f}, shared-counter errors {store_errors:.0f}")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--rpm", type=int, default=100)
    ap.add_argument("--pause-ms", type=int, default=100,
                    help="a client's pause after a 429 (default 100)")
    ap.add_argument("--runs", default="1,3",
                    help="gateway counts to run, comma-separated (default 1,3)")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--no-align", dest="align", action="store_false",
                    help="start at once instead of at the next minute boundary")
    ap.add_argument("--bin-dir", default=RELEASE,
                    help="where modelgate and mock-upstream are (default target/release)")
    a = ap.parse_args()
    a.bin_dir = os.path.abspath(a.bin_dir)
    ok = all([run(a, int(n)) for n in a.runs.split(",")])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
