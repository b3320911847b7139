"""A real `prosparse serve` process on a free loopback port, and raw HTTP to it.

    with ServerProcess(model, "--parallel", "2") as srv:
        srv.url                      http://127.0.0.1:PORT
        srv.request("POST", "/v1/completions", b"{...}")  -> (status, headers, body bytes)
        srv.json("GET", "/health")   -> (status, parsed JSON)
        srv.stop()                   SIGTERM; returns the seconds it took to exit
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model: str, *args: str, threads: int = 2, startup_s: float = 60.0):
        self.model, self.args, self.threads, self.startup_s = model, args, threads, startup_s
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="prosparse-serve-", suffix=".log", delete=False)

    # ---- lifetime ---------------------------------------------------------------
    def start(self) -> "ServerProcess":
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "prosparse_cpu.cli", "serve", self.model, "--port", str(self.port),
               "--threads", str(self.threads), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if self.request("GET", "/health", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server not up after {self.startup_s} s:\n{self.output()}")

    def stop(self, timeout: float = 10.0) -> float:
        """SIGTERM, then wait; the seconds until it exited (kill after timeout)."""
        t0 = time.monotonic()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        os.unlink(self.log.name)

    # ---- raw HTTP -----------------------------------------------------------------
    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 30.0):
        conn = self.connection(timeout)
        try:
            hdrs = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, obj=None, headers: dict | None = None):
        body = None if obj is None else json.dumps(obj).encode()
        status, _, data = self.request(method, path, body, headers)
        return status, json.loads(data)
