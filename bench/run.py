#!/usr/bin/env python3
"""modelgate's load benchmark, run by hand (bench/run.sh installs what it needs, then runs this).

Cases: the mock upstream directly, nginx, a bare Pingora pass-through, modelgate and the LiteLLM
proxy, each in front of the same mock upstream; non-streaming and streaming (20 SSE chunks);
concurrency 1, 16 and 64; plus a 200 KB request body, time to first byte of a stream, a soak of
modelgate's memory, and the reload cost of 10,000 virtual models.

Everything listens on 127.0.0.1. With --pin (the default on a machine with 2+ cores) the proxy
under test runs on CPU 1 with one worker, the load tool and the mock upstream on CPU 0, so every
proxy gets the same single core. Prints Markdown tables and writes raw JSON to --out.

The `pairs` phase compares targets on a noisy machine: all of them run at once (idle but one),
and short runs of the `--pair-case` alternate between them in rotating order, `--pairs` times;
it prints each round's throughput ratio to the first target and their median. Slow drift in
the machine's speed (other guests, other processes) then cancels out within a round.
"""

import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RELEASE = ROOT / "target" / "release"
CLK_TCK = os.sysconf("SC_CLK_TCK")

MOCK_PORT, MOCK_SLOW_PORT = 19100, 19101
PORTS = {"direct": MOCK_PORT, "nginx": 19200, "pingora": 19300, "modelgate": 19400,
         "modelgate-nolog": 19410, "litellm": 19500}
LITELLM_KEY = "sk-bench"


# ---------------------------------------------------------------- processes and /proc


def pinned(cmd, cpu, args):
    return (["taskset", "-c", str(cpu)] + cmd) if args.pin else cmd


def wait_port(port, proc, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def port_busy(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start(name, cmd, log, port, env=None, cwd=None):
    if port_busy(port):
        raise RuntimeError(f"{name}: port {port} is already in use (a leftover run?)")
    full_env = dict(os.environ)
    full_env.update(env or {})
    out = open(log, "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                            start_new_session=True)
    try:
        wait_port(port, proc)
    except RuntimeError as e:
        stop(proc)
        raise RuntimeError(f"{name}: {e}; see {log}") from None
    return proc


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def descendants(pid):
    """The pid and every process below it (nginx workers, uvicorn workers)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_split(pid):
    """(user, kernel) CPU seconds of the pid and every process below it."""
    user = kernel = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])  # utime
            kernel += int(fields[12])  # stime
        except (OSError, IndexError, ValueError):
            pass
    return user / CLK_TCK, kernel / CLK_TCK


def cpu_seconds(pid):
    return sum(cpu_split(pid))


def memory_kb(pid):
    """(VmRSS, VmHWM) of one process, in KiB."""
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                vals[k] = int(v.split()[0])
    return vals.get("VmRSS", 0), vals.get("VmHWM", 0)


# ---------------------------------------------------------------- servers under test


def fill(template, out, **values):
    text = (BENCH / template).read_text()
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", str(v))
    out.write_text(text)
    return out


def start_mock(args, port, delay_us=0):
    cmd = [str(RELEASE / "mock-upstream"), "--listen", f"127.0.0.1:{port}",
           "--chunk-delay-us", str(delay_us)]
    return start("mock", pinned(cmd, 0, args), args.out / f"mock-{port}.log", port)


def binary(kind, name, args):
    """The binary of target `name` of `kind`: its --build path, else the env override, else ours."""
    if name in args.builds:
        return args.builds[name][1]
    if kind == "pingora":
        return os.environ.get("PINGORA_BIN", str(RELEASE / "pingora-passthrough"))
    return os.environ.get("MODELGATE_BIN", str(RELEASE / "modelgate"))


def kind_of(name, args):
    """`pingora`, `modelgate`, ... for a --build target; the name itself otherwise."""
    return args.builds[name][0] if name in args.builds else name


def parse_builds(specs):
    """--build NAME=KIND:PATH (repeatable): another build of pingora or modelgate, on its own port."""
    builds = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        kind, _, path = rest.partition(":")
        if not name or name in PORTS or name in builds or kind not in ("pingora", "modelgate") \
                or not path:
            sys.exit(f"--build {spec!r}: expected NAME=KIND:PATH with a new NAME, KIND pingora or "
                     "modelgate and PATH a binary, e.g. mg-old=modelgate:/tmp/old/modelgate")
        if not os.access(path, os.X_OK):
            sys.exit(f"--build {spec!r}: {path} is not an executable file")
        builds[name] = (kind, path)
    return builds


def start_target(name, args, upstream_port, phase):
    """Starts the proxy `name` in front of the mock on `upstream_port`; None for `direct`."""
    port = PORTS[name]
    kind = kind_of(name, args)
    upstream = f"127.0.0.1:{upstream_port}"
    run_dir = args.out / name
    # Configs live apart from logs: modelgate watches its config's directory, and a log written
    # there would wake the watcher on every request.
    conf_dir = run_dir / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / f"{phase}.log"
    if name == "direct":
        return None
    if name == "nginx":
        conns = getattr(args, "nginx_connections", 4096)
        conf = fill("nginx.conf.template", conf_dir / "nginx.conf", WORKERS=args.workers,
                    PREFIX=run_dir, UPSTREAM=upstream, LISTEN=f"127.0.0.1:{port}",
                    CONNECTIONS=conns, RLIMIT=2 * conns + 64)
        cmd = ["nginx", "-p", str(run_dir), "-c", str(conf), "-e", str(run_dir / "error.log")]
        return start(name, pinned(cmd, 1, args), log, port)
    if kind == "pingora":
        cmd = [binary(kind, name, args), "--listen", f"127.0.0.1:{port}",
               "--upstream", upstream, "--threads", str(args.workers)]
        return start(name, pinned(cmd, 1, args), log, port)
    if kind in ("modelgate", "modelgate-nolog"):
        conf = fill("modelgate.yaml.template", conf_dir / "config.yaml", UPSTREAM=upstream)
        cmd = [binary(kind, name, args), "--config", str(conf), "--listen",
               f"127.0.0.1:{port}", "serve"]
        # cwd = run_dir so no stray .env is read.
        return start(name, pinned(cmd, 1, args), log, port, cwd=run_dir,
                     env={"MODELGATE_THREADS": str(args.workers),
                          # modelgate-nolog: the same with the access log off.
                          "RUST_LOG": "info,pingora=warn" + (",access=off" if name.endswith("nolog") else "")})
    if name == "litellm":
        conf = fill("litellm.yaml.template", conf_dir / "litellm.yaml", UPSTREAM=upstream)
        cmd = [str(args.venv / "bin" / "litellm"), "--config", str(conf), "--host", "127.0.0.1",
               "--port", str(port), "--num_workers", str(args.workers)]
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
        proc = start(name, pinned(cmd, 1, args), log, port, env=env, cwd=run_dir)
        # The port opens before the router is ready: wait for one good answer.
        deadline = time.time() + 60
        while True:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    data=json.dumps({"model": "bench", "messages": [
                        {"role": "user", "content": "hi"}]}).encode(),
                    headers={"Content-Type": "application/json",
                             "Authorization": f"Bearer {LITELLM_KEY}"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                stop(proc)
                raise RuntimeError(f"litellm never answered; see {log}")
            time.sleep(0.5)
        return proc
    raise ValueError(name)


# ---------------------------------------------------------------- load


def bodies(out):
    """The small body, the streaming body and the 200 KB coding-agent context."""
    small = {"model": "bench", "messages": [
        {"role": "user", "content": "Write a haiku about load balancers."}]}
    stream = dict(small, stream=True)
    rng = random.Random(7)
    words = ["fn", "let", "mut", "self", "match", "Some(x)", "=>", "return", "impl", "struct",
             "pub", "async", "await", "Result<T, E>", "\"quoted\"", "// comment", "{", "}"]
    messages = [{"role": "system", "content": "You are a coding agent. Follow the style guide."}]
    size = 0
    i = 0
    while size < 200 * 1024:
        lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(40)]
        content = "\n".join(lines)
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": content})
        size += len(json.dumps(content))
        i += 1
    big = {"model": "bench", "messages": messages}
    paths = {}
    for name, body in (("small", small), ("stream", stream), ("big", big)):
        p = out / f"body-{name}.json"
        p.write_text(json.dumps(body))
        paths[name] = p
    return paths


def wrk(args, port, body, conns, duration, auth=None, close=False):
    """One wrk run; `close`: a new connection for every request (`Connection: close`)."""
    env = dict(os.environ, BENCH_BODY=str(body), BENCH_AUTH=auth or "")
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
           "-s", str(BENCH / "wrk" / "request.lua"), f"http://127.0.0.1:{port}/v1/chat/completions"]
    if close:
        cmd[1:1] = ["-H", "Connection: close"]
    r = subprocess.run(pinned(cmd, 0, args), env=env, capture_output=True, text=True, check=True)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


def measure(args, name, proc, body, conns, duration):
    port = PORTS[name]
    auth = LITELLM_KEY if name == "litellm" else None
    wrk(args, port, body, conns, args.warmup)
    pid = proc.pid if proc else args.mock_pid
    cpu0 = cpu_seconds(pid)
    r = wrk(args, port, body, conns, duration, auth)
    cpu = cpu_seconds(pid) - cpu0
    with open("/proc/loadavg") as f:
        r["loadavg_1m"] = float(f.read().split()[0])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["cpu_us_per_req"] = cpu * 1e6 / max(r["requests"], 1)
    return r


# ---------------------------------------------------------------- phases


def matrix(args, paths):
    results = []
    cases = [(mode, c) for mode in ("small", "stream") for c in (1, 16, 64)]
    cases += [("big", c) for c in (1, 64)]
    if args.cases:
        wanted = {(b, int(c)) for b, c in (x.split(":") for x in args.cases.split(","))}
        cases = [x for x in cases if x in wanted]
    for name in args.targets:
        proc = start_target(name, args, MOCK_PORT, "matrix")
        try:
            for mode, c in cases:
                r = measure(args, name, proc, paths[mode], c, args.duration)
                r.update(target=name, body=mode, conns=c)
                if proc and kind_of(name, args).startswith("modelgate"):
                    r["rss_kb"], r["hwm_kb"] = memory_kb(proc.pid)
                print(json.dumps(r), flush=True)
                results.append(r)
        finally:
            if proc:
                stop(proc)
    return results


def ttfb(args):
    slow = start_mock(args, MOCK_SLOW_PORT, delay_us=args.chunk_delay_us)
    out = {}
    try:
        for name in args.targets:
            proc = start_target(name, args, MOCK_SLOW_PORT, "ttfb")
            port = MOCK_SLOW_PORT if name == "direct" else PORTS[name]
            cmd = [str(RELEASE / "ttfb"), "--addr", f"127.0.0.1:{port}", "--n", str(args.ttfb_n)]
            if name == "litellm":
                cmd += ["--header", f"authorization: Bearer {LITELLM_KEY}"]
            try:
                r = subprocess.run(pinned(cmd, 0, args), capture_output=True, text=True,
                                   check=True)
                out[name] = json.loads(r.stdout.strip().splitlines()[-1])
                print(json.dumps(dict(out[name], target=name)), flush=True)
            finally:
                if proc:
                    stop(proc)
    finally:
        stop(slow)
    return out


def soak(args, paths):
    proc = start_target("modelgate", args, MOCK_PORT, "soak")
    samples = []
    try:
        requests, elapsed, step = 0, 0, args.soak_step
        while elapsed < args.soak:
            r = wrk(args, PORTS["modelgate"], paths["small"], 64, step)
            requests += r["requests"]
            elapsed += step
            rss, hwm = memory_kb(proc.pid)
            samples.append({"t_s": elapsed, "requests": requests, "rss_kb": rss, "hwm_kb": hwm,
                            "non2xx": r["non2xx"], "socket_errors": r["socket_errors"]})
            print(json.dumps(samples[-1]), flush=True)
    finally:
        stop(proc)
    return samples


def pairs(args, paths):
    """Short alternating runs, every target up throughout; ratios to the first target."""
    mode, conns = args.pair_case.split(":")
    conns = int(conns)
    procs = {}
    rounds = []
    try:
        for name in args.targets:
            procs[name] = start_target(name, args, MOCK_PORT, "pairs")
        for name in args.targets:
            wrk(args, PORTS[name], paths[mode], conns, args.warmup, close=args.pair_close)
        n = len(args.targets)
        for i in range(args.pairs):
            row = {}
            # Rotating order, so no target always runs first or right after another.
            for k in range(n):
                name = args.targets[(i + k) % n]
                proc = procs[name]
                pid = proc.pid if proc else args.mock_pid
                cpu0 = cpu_seconds(pid)
                r = wrk(args, PORTS[name], paths[mode], conns, args.pair_secs,
                        close=args.pair_close)
                cpu = cpu_seconds(pid) - cpu0
                row[name] = {"rps": r["requests"] / (r["duration_us"] / 1e6),
                             "cpu_us_per_req": cpu * 1e6 / max(r["requests"], 1),
                             "errors": r["non2xx"] + r["socket_errors"]}
            ref = row[args.targets[0]]["rps"]
            for name in args.targets:
                row[name]["ratio"] = row[name]["rps"] / ref
            rounds.append(row)
            print(json.dumps({"round": i + 1, **row}), flush=True)
    finally:
        for proc in procs.values():
            if proc:
                stop(proc)
    return {"case": args.pair_case, "close": args.pair_close, "secs": args.pair_secs,
            "rounds": rounds}


def reload_cost():
    r = subprocess.run([str(RELEASE / "reload-cost"), "--models", "10000", "--runs", "10"],
                       capture_output=True, text=True, check=True)
    print(r.stdout, flush=True)
    return r.stdout


def machine(venv):
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"
    return {
        "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"),
        "cores": os.cpu_count(),
        "memory": sh("free -h | awk '/Mem:/ {print $2}'"),
        "kernel": platform.release(),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "virtualization": sh("lscpu | sed -n 's/^Hypervisor vendor: *//p'"),
        "loadavg_at_start": sh("cat /proc/loadavg"),
        "nginx": sh("nginx -v 2>&1"),
        "wrk": sh("wrk -v 2>&1 | head -1"),
        "rustc": sh("rustc --version"),
        "litellm": sh(f"'{venv}/bin/python' -c 'import importlib.metadata as m; "
                      "print(m.version(\"litellm\"))'"),
    }


# ---------------------------------------------------------------- report


def report(res):
    lines = []
    direct = {(r["body"], r["conns"]): r for r in res["matrix"] if r["target"] == "direct"}
    if res["matrix"]:
        lines.append("| body | c | target | req/s | p50 µs | p99 µs | added p50 µs | CPU µs/req | errors | load |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in res["matrix"]:
        d = direct.get((r["body"], r["conns"]))
        added = "" if r["target"] == "direct" or not d else f"{r['p50_us'] - d['p50_us']:+d}"
        lines.append(f"| {r['body']} | {r['conns']} | {r['target']} | {r['rps']:.0f} | "
                     f"{r['p50_us']} | {r['p99_us']} | {added} | {r['cpu_us_per_req']:.1f} | "
                     f"{r['non2xx'] + r['socket_errors']} | {r['loadavg_1m']:.1f} |")
    if res.get("ttfb"):
        lines += ["", "| target | TTFB p50 µs | TTFB p99 µs | p50 over direct µs |", "|---|---|---|---|"]
        d = res["ttfb"].get("direct")
        for name, t in res["ttfb"].items():
            over = "" if name == "direct" or not d else f"{t['p50_us'] - d['p50_us']:+.0f}"
            lines.append(f"| {name} | {t['p50_us']:.0f} | {t['p99_us']:.0f} | {over} |")
    if res.get("pairs"):
        pr = res["pairs"]
        names = list(pr["rounds"][0].keys()) if pr["rounds"] else []
        close = ", a connection per request" if pr.get("close") else ""
        lines += ["", f"pairs ({pr['case']}{close}, {len(pr['rounds'])} rounds of {pr['secs']} s): "
                  f"throughput ratio to {names[0] if names else '-'}",
                  "", "| target | median | min | max | CPU µs/req median |", "|---|---|---|---|---|"]
        for name in names:
            ratios = sorted(r[name]["ratio"] for r in pr["rounds"])
            cpus = sorted(r[name]["cpu_us_per_req"] for r in pr["rounds"])
            lines.append(f"| {name} | {statistics.median(ratios):.3f} | {ratios[0]:.3f} | "
                         f"{ratios[-1]:.3f} | {statistics.median(cpus):.1f} |")
    if res.get("soak"):
        s = res["soak"]
        lines += ["", f"soak: {s[-1]['requests']} requests in {s[-1]['t_s']} s; RSS MiB "
                  + ", ".join(f"{x['t_s']}s={x['rss_kb'] / 1024:.1f}" for x in s)]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--targets", default="direct,nginx,pingora,modelgate,litellm")
    p.add_argument("--duration", type=int, default=10, help="seconds per case")
    p.add_argument("--cases", default="",
                   help="matrix cases to run, e.g. small:64,big:1 (default: all)")
    p.add_argument("--warmup", type=int, default=2, help="seconds before each case")
    p.add_argument("--workers", type=int, default=1, help="worker threads/processes per proxy")
    p.add_argument("--no-pin", dest="pin", action="store_false")
    p.add_argument("--phases", default="matrix,ttfb,soak,reload")
    p.add_argument("--ttfb-n", type=int, default=300)
    p.add_argument("--chunk-delay-us", type=int, default=2000,
                   help="pause between SSE chunks in the TTFB phase")
    p.add_argument("--pairs", type=int, default=20, help="rounds of the pairs phase")
    p.add_argument("--pair-secs", type=int, default=3, help="seconds per run in the pairs phase")
    p.add_argument("--pair-case", default="small:64", help="body:concurrency of the pairs phase")
    p.add_argument("--pair-close", action="store_true",
                   help="pairs phase: a new connection for every request (Connection: close)")
    p.add_argument("--soak", type=int, default=300, help="soak seconds")
    p.add_argument("--soak-step", type=int, default=30)
    p.add_argument("--build", dest="builds", action="append", default=[], metavar="NAME=KIND:PATH",
                   help="another build of pingora or modelgate as target NAME (repeatable), e.g.\n"
                        "--build mg-old=modelgate:/tmp/old/modelgate --targets modelgate,mg-old")
    p.add_argument("--venv", type=Path, default=ROOT / "target" / "bench" / "venv")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / time.strftime("%Y%m%d-%H%M%S"))
    args = p.parse_args()
    args.targets = [t for t in args.targets.split(",") if t]
    args.builds = parse_builds(args.builds)
    for i, name in enumerate(args.builds):
        PORTS[name] = 19600 + 10 * i
    unknown = [t for t in args.targets if t not in PORTS]
    if unknown:
        sys.exit(f"--targets: unknown {', '.join(unknown)}; known: {', '.join(PORTS)} "
                 "(add builds with --build)")
    body, _, conns = args.pair_case.partition(":")
    if body not in ("small", "stream", "big") or not conns.isdigit() or int(conns) < 1:
        sys.exit(f"--pair-case {args.pair_case!r}: expected BODY:CONNS with BODY small, stream "
                 "or big and CONNS a positive number, e.g. small:64")
    phases = set(args.phases.split(","))
    if args.pin and (os.cpu_count() or 1) < 2:
        args.pin = False
    if args.pin and not shutil.which("taskset"):
        sys.exit("taskset (util-linux) is needed for --pin; or pass --no-pin")
    args.out.mkdir(parents=True, exist_ok=True)
    args.out = args.out.resolve()
    paths = bodies(args.out)
    res = {"machine": machine(args.venv), "args": {k: str(v) for k, v in vars(args).items()}}
    print(json.dumps(res["machine"], indent=1), flush=True)
    mock = start_mock(args, MOCK_PORT)
    args.mock_pid = mock.pid
    try:
        if "matrix" in phases:
            res["matrix"] = matrix(args, paths)
        if "ttfb" in phases:
            res["ttfb"] = ttfb(args)
        if "pairs" in phases:
            res["pairs"] = pairs(args, paths)
        if "soak" in phases:
            res["soak"] = soak(args, paths)
    finally:
        stop(mock)
    if "reload" in phases:
        res["reload"] = reload_cost()
    (args.out / "results.json").write_text(json.dumps(res, indent=1))
    print()
    print(report(dict(res, matrix=res.get("matrix", []))))
    print(f"\nraw results: {args.out}")


if __name__ == "__main__":
    main()
