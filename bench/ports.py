"""Loopback ports for the hand-run benchmarks: a free one, and waiting for a process to listen."""

import socket
import sys
import time


def free_port():
    """A port on 127.0.0.1 that nothing listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(port, proc, what, timeout=30.0):
    """Waits until `port` accepts connections; exits with a message if `proc` ends first or
    nothing listens within `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} is not listening on {port}")
