#!/usr/bin/env python3
"""The audio targets of issue 19, measured against the real binary (run by hand; numbers in
BENCHMARKS.md):

1. A 20 MB transcription upload through a virtual model whose first target answers 500: the
   second upstream must receive the file byte-identical, and the gateway's peak RSS (VmHWM)
   must grow by no more than 2x the body size during it.
2. Speech relayed as it comes: an upstream sends the audio in slow chunks; for each chunk, the
   time from the upstream's write to the client's read (both in this process, one monotonic
   clock). Target: the first bytes within 5 ms.

Usage: bench/audio_ops.py [--bin target/release/modelgate] [--mb 20] [--chunks 10] [--rounds 3]
"""
import argparse
import hashlib
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ports import free_port, wait_listening as wait_port  # noqa: E402

class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fail = False
    received = []
    sent_at = []
    chunks = 10
    pause = 0.2

    def log_message(self, *a):
        pass

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(n)
        if self.fail:
            out = b'{"error":{"message":"down","type":"server_error"}}'
            self.send_response(500)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if self.path.endswith("/audio/speech"):
            self.send_response(200)
            self.send_header("content-type", "audio/mpeg")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for i in range(self.chunks):
                time.sleep(self.pause)
                piece = bytes([i]) * 4096
                Upstream.sent_at.append(time.monotonic())
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        Upstream.received.append(body)
        out = b'{"text":"ok"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def serve(fail):
    handler = type("H", (Upstream,), {"fail": fail})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    # The gateway closes pooled connections at shutdown: not an error worth a traceback.
    srv.handle_error = lambda *a: None
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/modelgate")
    ap.add_argument("--mb", type=int, default=20)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1, help="each with a fresh gateway process")
    args = ap.parse_args()
    Upstream.chunks = args.chunks
    a, b = serve(True), serve(False)
    try:
        for i in range(args.rounds):
            print(f"round {i + 1}")
            one_round(args, a, b)
    finally:
        a.shutdown()
        b.shutdown()


def one_round(args, a, b):
    port = free_port()
    cfg = f"""providers:
  a: {{type: openai_compatible, base_url: "http://127.0.0.1:{a.server_port}/v1", api_key: k, models: [m]}}
  b: {{type: openai_compatible, base_url: "http://127.0.0.1:{b.server_port}/v1", api_key: k, models: [m]}}
virtual_models:
  - source: v
    strategy: priority
    targets: [a/m, b/m]
"""
    d = tempfile.mkdtemp()
    path = os.path.join(d, "config.yaml")
    with open(path, "w") as f:
        f.write(cfg)
    env = dict(os.environ, SQLITE_PATH=os.path.join(d, "db.sqlite"), MODELGATE_THREADS="2",
               LOG_LEVEL="warn")
    gw = subprocess.Popen([os.path.abspath(args.bin), "serve", "--config", path, "--listen", f"127.0.0.1:{port}"],
                          env=env, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        # Warm up (a small upload), so the baseline includes the runtime's own allocations.
        upload(port, b"x" * 1000)
        before = vm_hwm_kib(gw.pid)
        audio = os.urandom(args.mb * 1024 * 1024)
        body_len, status = upload(port, audio)
        after = vm_hwm_kib(gw.pid)
        ok = Upstream.received and audio in Upstream.received[-1]
        growth = (after - before) * 1024
        print(f"upload: {body_len / 1e6:.1f} MB body, status {status}, second upstream got the file "
              f"byte-identical: {bool(ok)} (sha256 {hashlib.sha256(audio).hexdigest()[:12]})")
        print(f"upload: peak RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB, growth "
              f"{growth / 1e6:.1f} MB = {growth / body_len:.2f}x the body (target <= 2x)")
        gaps = speech(port)
        print(f"speech: {len(gaps)} chunks, upstream write -> client read: first "
              f"{gaps[0] * 1000:.2f} ms, median {sorted(gaps)[len(gaps) // 2] * 1000:.2f} ms, "
              f"max {max(gaps) * 1000:.2f} ms (target: first <= 5 ms)")
    finally:
        gw.terminate()
        gw.wait()


def upload(port, audio):
    boundary = "----bench-boundary-4f1c"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nv\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = head + audio + tail
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("POST", "/v1/audio/transcriptions", body=body,
              headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    r = c.getresponse()
    r.read()
    c.close()
    return len(body), r.status


def speech(port):
    Upstream.sent_at.clear()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("POST", "/v1/audio/speech", body=json.dumps({"model": "v", "input": "hi", "voice": "a"}),
              headers={"content-type": "application/json"})
    r = c.getresponse()
    got_at = []
    total = 0
    want = 4096
    while True:
        piece = r.read1(65536)
        if not piece:
            break
        now = time.monotonic()
        # Every chunk whose first byte is in this read arrived now.
        while len(got_at) * want < total + len(piece):
            got_at.append(now)
        total += len(piece)
    c.close()
    return [g - s for g, s in zip(got_at, Upstream.sent_at)]


if __name__ == "__main__":
    sys.exit(main())
