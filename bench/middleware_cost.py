#!/usr/bin/env python3
"""What a request-middleware pipeline costs a proxied request, end to end (run by hand).

One modelgate (release build) in front of the bench mock upstream serves two virtual models over
the same target: `plain` (no middleware) and `piped` (set-params + system-prompt + guard with a
deny pattern, a redaction and an input bound). wrk sends the same body to each in alternating
short runs; the gateway's CPU time per request is compared pair by pair (the machine's drift
cancels within a pair).

    cargo build --release -p modelgate -p mock-upstream
    python3 bench/middleware_cost.py                 # the 200 KB coding-agent body, 8 pairs
    python3 bench/middleware_cost.py --body small --pairs 12
    python3 bench/middleware_cost.py --dead-webhook --body small   # a webhook nobody answers

With --dead-webhook, `piped` instead carries one post-response `webhook` to a port where
nothing listens: the client's latency (p50, p99) is compared, and the drops the gateway counts
are read from /metrics.
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (MOCK_PORT, RELEASE, bodies, cpu_seconds, start, start_mock,  # noqa: E402
                 stop, wrk)

PORT = 19800
CONFIG = """providers:
  mock:
    type: openai_compatible
    base_url: http://127.0.0.1:{mock}/v1
    api_key: unused
    models: [bench-a]
virtual_models:
  - source: plain
    target: mock/bench-a
  - source: piped
    target: mock/bench-a
    request_middleware:
      - {{name: set-params, config: {{set: {{temperature: 0.2}}, defaults: {{max_tokens: 512}}}}}}
      - {{name: system-prompt, config: {{text: "Follow the team's style guide.", position: prepend}}}}
{guard}"""
GUARD = """      - {{name: guard, config: {{deny: ["(?i)ignore (all|previous) instructions"], redact: [{{pattern: "sk-[A-Za-z0-9]{{20,}}", replacement: "[key]"}}], max_input_chars: 1000000}}}}
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--body", choices=["small", "big"], default="big")
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--secs", type=int, default=4)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--no-guard", action="store_true", help="set-params and system-prompt only")
    p.add_argument("--dead-webhook", action="store_true",
                   help="compare a post-response webhook to a dead receiver instead")
    args = p.parse_args()
    args.pin, args.workers = False, 1
    args.out = Path(tempfile.mkdtemp(prefix="modelgate-mwcost-"))
    paths = bodies(args.out)
    base = json.loads(Path(paths[args.body]).read_text())
    files = {}
    for vm in ("plain", "piped"):
        f = args.out / f"body-{vm}.json"
        f.write_text(json.dumps(dict(base, model=vm)))
        files[vm] = f
    conf = args.out / "conf"
    conf.mkdir()
    guard = "" if args.no_guard else GUARD.format()
    config = CONFIG.format(mock=MOCK_PORT, guard=guard)
    if args.dead_webhook:
        # Nothing listens on the port after PORT.
        config = config.split("  - source: piped")[0] + (
            "  - source: piped\n    target: mock/bench-a\n    post_response_middleware:\n"
            f"      - {{name: webhook, config: {{url: \"http://127.0.0.1:{PORT + 1}/hook\", "
            "timeout_ms: 200}}\n")
    (conf / "config.yaml").write_text(config)
    mock = start_mock(args, MOCK_PORT)
    gw = None
    try:
        gw = start("modelgate", [str(RELEASE / "modelgate"), "--config", str(conf / "config.yaml"),
                                 "--listen", f"127.0.0.1:{PORT}", "serve"],
                   args.out / "modelgate.log", PORT, cwd=args.out,
                   env={"MODELGATE_THREADS": "1", "RUST_LOG": "warn"})
        for vm in files:
            wrk(args, PORT, files[vm], args.conns, 2)
        rows = []
        for i in range(args.pairs):
            cpu = {}
            for vm in (("plain", "piped") if i % 2 == 0 else ("piped", "plain")):
                c0 = cpu_seconds(gw.pid)
                r = wrk(args, PORT, files[vm], args.conns, args.secs)
                cpu[vm] = (cpu_seconds(gw.pid) - c0) * 1e6 / max(r["requests"], 1)
                cpu[vm + "_p50"], cpu[vm + "_p99"] = r["p50_us"], r["p99_us"]
            rows.append(cpu)
            print(f"pair {i + 1}: plain {cpu['plain']:.1f} µs/req (p50 {cpu['plain_p50']} p99 "
                  f"{cpu['plain_p99']} µs), piped {cpu['piped']:.1f} µs/req (p50 "
                  f"{cpu['piped_p50']} p99 {cpu['piped_p99']} µs), ratio "
                  f"{cpu['piped'] / cpu['plain']:.2f}", flush=True)
        ratios = [r["piped"] / r["plain"] for r in rows]
        print(f"\n{args.body} body: CPU per request with the pipeline / without, median of "
              f"{len(rows)} pairs: {statistics.median(ratios):.2f}x "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f}); plain "
              f"{statistics.median(r['plain'] for r in rows):.1f} µs, piped "
              f"{statistics.median(r['piped'] for r in rows):.1f} µs")
        for vm in ("plain", "piped"):
            print(f"{vm}: latency p50 {statistics.median(r[vm + '_p50'] for r in rows)} µs, "
                  f"p99 {statistics.median(r[vm + '_p99'] for r in rows)} µs (medians)")
        if args.dead_webhook:
            import urllib.request
            text = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics").read().decode()
            print("\n".join(ln for ln in text.splitlines()
                            if ln.startswith("modelgate_middleware_webhook_records_total")))
    finally:
        if gw:
            stop(gw)
        stop(mock)


if __name__ == "__main__":
    main()
