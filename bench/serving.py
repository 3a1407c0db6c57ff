"""A real `zhuanxie serve` on loopback for the benchmarks that drive it (load.py, latency.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Sequence

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(options: Sequence[str], timeout: float) -> tuple[subprocess.Popen[bytes], str]:
    """`zhuanxie serve` with ``options`` (quiet, no UI) and its base URL once /ready answers;
    exits the benchmark if it stops or is not ready within ``timeout`` seconds."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "zhuanxie.cli",
        "serve",
        "--host=127.0.0.1",
        f"--port={port}",
        "--no-ui",
        "--log-level=warning",
        *options,
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sys.stderr)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"zhuanxie serve exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"zhuanxie serve did not become ready within {timeout:.0f} s")
