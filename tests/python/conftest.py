"""Starts `trestle mock` and `trestle serve` (the real binary) on free loopback ports."""

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

BIN = os.environ.get("TRESTLE_BIN", str(Path(__file__).resolve().parents[2] / "target/debug/trestle"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, cwd) -> subprocess.Popen:
    port = int(args[args.index("--listen") + 1].rsplit(":", 1)[1])
    log = open(Path(cwd) / f"trestle-{port}.log", "w")
    proc = subprocess.Popen([BIN, *args], cwd=cwd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"trestle {args[0]} exited: see {log.name}")
        # An HTTP answer, not only a connect: a connect to a free port in the ephemeral range
        # can pick that port as its source and connect to itself.
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
                if s.recv(8).startswith(b"HTTP/1."):
                    return proc
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"trestle {args[0]} did not listen on {port}")


@pytest.fixture(scope="session")
def gateway_url():
    work = tempfile.mkdtemp(prefix="trestle-sdk-")
    up, backup, gw = free_port(), free_port(), free_port()
    procs = [
        start(["mock", "--listen", f"127.0.0.1:{up}", "--api-key", "sk-up"], work),
        start(["mock", "--listen", f"127.0.0.1:{backup}"], work),
    ]
    config = Path(work) / "trestle.toml"
    reference = (Path(__file__).resolve().parents[2] / "examples/two-upstreams.toml").read_text()
    config.write_text(
        reference.replace("http://127.0.0.1:9101", f"http://127.0.0.1:{up}").replace(
            "http://127.0.0.1:9102", f"http://127.0.0.1:{backup}"
        )
    )
    env_key = os.environ.get("UP_KEY")
    os.environ["UP_KEY"] = "sk-up"
    try:
        procs.append(start(["serve", "--config", str(config), "--listen", f"127.0.0.1:{gw}"], work))
    finally:
        if env_key is None:
            os.environ.pop("UP_KEY", None)
    yield f"http://127.0.0.1:{gw}"
    for p in procs:
        p.terminate()
        p.wait(timeout=20)
