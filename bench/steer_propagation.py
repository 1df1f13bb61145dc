#!/usr/bin/env python3
"""How long rate-limit steering takes to travel between gateways through Redis (issue 21).

Two upstreams on loopback (small Python servers: the bench mock cannot answer 429): `a` answers
every chat request 429 with `Retry-After: --retry-after` (OpenAI's rate-limit body), `b` answers
200. Two gateways (release build) share one Redis under a key prefix of this run's own and
route the virtual model `v` by priority over [a, b]. Each trial waits until the second gateway
no longer holds `a` as rate limited, sends one request through the first gateway (served by
`b`: the 429 falls back at once), then polls the second gateway's `/metrics` every 5 ms until
`modelgate_target_rate_limited{target="a/m"}` reads 1. The delay is from the first gateway's
answer to that reading. Expected: within two steering rounds (2 x 250 ms).

Build first: cargo build --release -p modelgate
Usage: python3 bench/steer_propagation.py [--trials 20] [--retry-after 2]
"""

import argparse
import http.client
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
RATE_BODY = json.dumps({"error": {
    "message": "Rate limit reached for m on requests per min (RPM): Limit 500, Used 500, Requested 1.",
    "type": "requests", "param": None, "code": "rate_limit_exceeded"}}).encode()


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ports import free_port, wait_listening as wait_port  # noqa: E402

def upstream(status, retry_after):
    """A loopback chat upstream answering every POST with `status`; returns its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]})
            self.answer(200, body.encode(), [])

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            if status == 429:
                self.answer(429, RATE_BODY, [("retry-after", str(retry_after))])
            else:
                body = json.dumps({
                    "id": "c", "object": "chat.completion", "created": 1, "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok"}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
                self.answer(200, body.encode(), [])

        def answer(self, code, body, headers):
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    out = (r.status, r.read().decode())
    c.close()
    return out


def chat(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"model": "v", "messages": [{"role": "user", "content": "hi"}]})
    c.request("POST", "/v1/chat/completions", body=body,
              headers={"content-type": "application/json"})
    r = c.getresponse()
    r.read()
    out = (r.status, r.getheader("x-modelgate-model"))
    c.close()
    return out


def limited(port):
    text = get(port, "/metrics")[1]
    return 'modelgate_target_rate_limited{target="a/m"} 1' in text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--retry-after", type=int, default=2)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--bin-dir", default=RELEASE,
                    help="where modelgate is (default target/release)")
    a = ap.parse_args()
    a.bin_dir = os.path.abspath(a.bin_dir)
    a_port, b_port = upstream(429, a.retry_after), upstream(200, 0)
    tmp = tempfile.mkdtemp()
    cfg = os.path.join(tmp, "config.yaml")
    with open(cfg, "w") as f:
        f.write("providers:\n")
        for name, port in (("a", a_port), ("b", b_port)):
            f.write(f"  {name}:\n    type: openai_compatible\n"
                    f"    base_url: http://127.0.0.1:{port}/v1\n    api_key: k\n"
                    "    models: [m]\n")
        f.write("virtual_models:\n  - source: v\n    strategy: priority\n"
                "    targets: [a/m, b/m]\n")
    prefix = f"modelgate-bench-steer:{os.getpid()}:{int(time.time())}:"
    procs, ports = [], []
    try:
        for i in range(2):
            port = free_port()
            env = {"PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn",
                   "SQLITE_PATH": os.path.join(tmp, f"store{i}.db"),
                   "REDIS_URL": a.redis, "REDIS_KEY_PREFIX": prefix,
                   # Every trial's 429 counts against `a`'s breaker: keep it closed.
                   "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1000000"}
            procs.append(subprocess.Popen(
                [os.path.join(a.bin_dir, "modelgate"), "--config", cfg,
                 "--listen", f"127.0.0.1:{port}"],
                env=env, cwd=tmp, stderr=subprocess.DEVNULL))
            deadline = time.time() + 30
            while True:
                try:
                    if get(port, "/health")[0] == 200:
                        break
                except OSError:
                    pass
                if time.time() > deadline or procs[-1].poll() is not None:
                    sys.exit("a gateway did not start")
                time.sleep(0.05)
            ports.append(port)
        one, two = ports
        delays = []
        for _ in range(a.trials):
            deadline = time.time() + a.retry_after + 10
            while limited(two) or limited(one):
                if time.time() > deadline:
                    sys.exit("the steering state never expired")
                time.sleep(0.05)
            status, model = chat(one)
            t0 = time.perf_counter()
            if (status, model) != (200, "b/m"):
                sys.exit(f"the first gateway answered {status} from {model}")
            while not limited(two):
                if time.perf_counter() - t0 > 10:
                    for port in (one, two):
                        m = get(port, "/metrics")[1]
                        print("\n".join(l for l in m.splitlines() if "steer" in l or "target_" in l))
                    sys.exit("the second gateway never saw the 429")
                time.sleep(0.005)
            delays.append((time.perf_counter() - t0) * 1000)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
    d = sorted(delays)
    print(f"{len(d)} trials: propagation p50 {d[len(d) // 2]:.0f} ms, "
          f"p90 {d[min(len(d) - 1, int(len(d) * 0.9))]:.0f} ms, max {d[-1]:.0f} ms, "
          f"min {d[0]:.0f} ms")


if __name__ == "__main__":
    main()
