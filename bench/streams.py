#!/usr/bin/env python3
"""The streams phase of the load benchmark: many long streaming answers open at once.

For each step (a number of concurrent streams) and each target (the bare Pingora pass-through,
modelgate, nginx: fresh processes, in rotating order) it starts the mock upstream answering every
stream with `--chunks` SSE events `--interval-ms` apart, starts the target (one worker, pinned to
CPU 1; the load tool and the mock on CPU 0), reads its idle RSS, then runs `stream-load`, which
opens the streams evenly over `--ramp-ms` and holds each to its end. Meanwhile it samples the
target's RSS and CPU time every 200 ms. Per step and target it reports:

- errors (by kind) and the peak of streams open at once;
- RSS at the peak, and RSS per open stream over the idle baseline;
- CPU per relayed SSE event, over the window where every stream is open (CPU seconds of the
  target divided by the events the clients received in that window), and its split into user
  space (the program's own work) and the kernel (the sockets and their wake-ups);
- time to response header p50/p99 and the gap between two reads of one stream p99 (the
  stutter a chat client sees).

Processes are limited by the machine's open-files hard limit: a proxy holds two descriptors per
stream, so --steps beyond (hard limit / 2) are refused with a message.

    cargo build --release -p modelgate -p mock-upstream -p pingora-passthrough -p stream-load
    python3 bench/streams.py --steps 1000,5000,9000
"""

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the load benchmark's process helpers)

PORT_MOCK = 19150


def rss_kb(pid):
    """RSS of the process and every process below it (nginx's workers), in KiB."""
    total = 0
    for p in run.descendants(pid):
        try:
            total += run.memory_kb(p)[0]
        except OSError:
            pass
    return total


def sampler(pid, out, stop_flag):
    t0 = time.monotonic()
    while not stop_flag.is_set():
        out.append((time.monotonic() - t0, rss_kb(pid), *run.cpu_split(pid)))
        time.sleep(0.2)


def one(args, name, streams):
    mock_cmd = [str(run.RELEASE / "mock-upstream"), "--listen", f"127.0.0.1:{PORT_MOCK}",
                "--chunk-delay-us", str(args.interval_ms * 1000), "--chunks", str(args.chunks)]
    mock = run.start("mock", run.pinned(mock_cmd, 0, args), args.out / f"mock-{name}-{streams}.log",
                     PORT_MOCK)
    proc = run.start_target(name, args, PORT_MOCK, f"streams-{streams}")
    try:
        port = run.PORTS[name]
        # One stream first, so lazily built state (pools, the first log line) is in the baseline.
        subprocess.run(run.pinned([str(run.RELEASE / "stream-load"), "--target",
                                   f"127.0.0.1:{port}", "--streams", "1", "--ramp-ms", "0"], 0, args),
                       capture_output=True, check=True, timeout=120)
        time.sleep(0.5)
        idle_kb = rss_kb(proc.pid)
        samples, stop_flag = [], threading.Event()
        th = threading.Thread(target=sampler, args=(proc.pid, samples, stop_flag))
        cmd = [str(run.RELEASE / "stream-load"), "--target", f"127.0.0.1:{port}",
               "--streams", str(streams), "--ramp-ms", str(args.ramp_ms),
               "--sources", str(args.sources), "--timeout-s", "300"]
        th.start()
        started = time.monotonic()
        r = subprocess.run(run.pinned(cmd, 0, args), capture_output=True, text=True, timeout=600)
        stop_flag.set()
        th.join()
        if r.returncode != 0:
            raise RuntimeError(f"stream-load failed: {r.stderr.strip()}")
        load = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        run.stop(proc)
        run.stop(mock)
    # Samples are timed from the sampler's start, just before the load tool's; the window where
    # every stream is open runs from the end of the ramp (plus 1 s) to the first stream's end
    # (less 1 s).
    lo = args.ramp_ms / 1000 + 1.0
    hi = args.chunks * args.interval_ms / 1000 - 1.0
    win = [s for s in samples if lo <= s[0] <= hi]
    eps = load["events_per_second"]
    if len(win) >= 2:
        user = win[-1][2] - win[0][2]
        kernel = win[-1][3] - win[0][3]
        a, b = int(win[0][0]), int(win[-1][0])
        events = max(sum(eps[a:b]) * ((win[-1][0] - win[0][0]) / max(b - a, 1)), 1)
        cpu_us_per_event = (user + kernel) * 1e6 / events
        user_us_per_event = user * 1e6 / events
        kernel_us_per_event = kernel * 1e6 / events
    else:
        cpu_us_per_event = user_us_per_event = kernel_us_per_event = None
    peak_kb = max((s[1] for s in samples), default=idle_kb)
    res = {
        "target": name, "streams": streams, "errors": load["errors"], "ok": load["ok"],
        "peak_open": load["peak_open"], "idle_rss_kb": idle_kb, "peak_rss_kb": peak_kb,
        "rss_kib_per_stream": (peak_kb - idle_kb) / max(load["peak_open"], 1),
        "cpu_us_per_event": cpu_us_per_event,
        "user_us_per_event": user_us_per_event,
        "kernel_us_per_event": kernel_us_per_event,
        "ttfb_ms": load["ttfb_ms"], "gap_ms": load["gap_ms"], "events": load["events"],
        "wall_s": time.monotonic() - started,
    }
    print(json.dumps(res), flush=True)
    return res


def table(rows):
    out = ["| streams | target | errors | RSS at peak (MiB) | RSS per open stream (KiB) | CPU per event: user + kernel (us) | header p50 / p99 (ms) | read gap p99 (ms) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        errs = sum(r["errors"].values())
        cpu = "-"
        if r["cpu_us_per_event"] is not None:
            cpu = (f'{r["cpu_us_per_event"]:.2f}: {r["user_us_per_event"]:.2f} + '
                   f'{r["kernel_us_per_event"]:.2f}')
        out.append(f'| {r["streams"]:,} | {r["target"]} | {errs} | {r["peak_rss_kb"] / 1024:.1f} | '
                   f'{r["rss_kib_per_stream"]:.1f} | {cpu} | {r["ttfb_ms"]["p50"]:.1f} / '
                   f'{r["ttfb_ms"]["p99"]:.1f} | {r["gap_ms"]["p99"]:.1f} |')
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--targets", default="pingora,modelgate,nginx")
    p.add_argument("--steps", default="1000,5000,9000")
    p.add_argument("--chunks", type=int, default=200, help="SSE events per stream")
    p.add_argument("--interval-ms", type=int, default=100, help="pause between two events")
    p.add_argument("--ramp-ms", type=int, default=4000, help="open the streams over this long")
    p.add_argument("--sources", type=int, default=4, help="127.0.0.x source addresses")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-pin", dest="pin", action="store_false")
    p.add_argument("--build", dest="builds", action="append", default=[], metavar="NAME=KIND:PATH")
    p.add_argument("--out", type=Path,
                   default=run.ROOT / "bench" / "results" / ("streams-" + time.strftime("%Y%m%d-%H%M%S")))
    args = p.parse_args()
    args.targets = [t for t in args.targets.split(",") if t]
    args.builds = run.parse_builds(args.builds)
    for i, name in enumerate(args.builds):
        run.PORTS[name] = 19600 + 10 * i
    steps = [int(s) for s in args.steps.split(",") if s]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    too_many = [s for s in steps if 2 * s + 256 > hard]
    if too_many:
        sys.exit(f"--steps {','.join(map(str, too_many))}: a proxy needs two descriptors per "
                 f"stream and this machine's open-files hard limit is {hard}; "
                 f"use at most {(hard - 256) // 2} streams or raise the limit")
    if args.chunks * args.interval_ms < args.ramp_ms + 4000:
        sys.exit("--chunks x --interval-ms must exceed --ramp-ms by 4 s, or no window has every "
                 "stream open")
    args.nginx_connections = 2 * max(steps) + 64
    args.venv = run.ROOT / "target" / "bench" / "venv"
    args.out.mkdir(parents=True, exist_ok=True)
    args.out = args.out.resolve()
    rows = []
    for i, streams in enumerate(steps):
        n = len(args.targets)
        for k in range(n):
            rows.append(one(args, args.targets[(i + k) % n], streams))
    (args.out / "streams.json").write_text(json.dumps(rows, indent=1))
    print()
    print(table(rows))
    print(f"\nraw results: {args.out}")


if __name__ == "__main__":
    main()
