"""Real server processes for tests: `semcache serve` on 127.0.0.1 with its own data dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from semcache.config import load_settings
from semcache.embed.runtime import default_models_dir
from semcache.errors import ConfigError

__all__ = ["ServerProcess", "free_port"]

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_models_ready: set[tuple[str, str, str]] = set()


def _prepare_models(folder: str, environ: dict[str, str]) -> None:
    """Export the ONNX models a server with ``environ`` loads into ``folder`` once per test
    run, in this process, so that no server spends its start-up timeout exporting them (only
    a load when they are cached)."""
    try:
        settings = load_settings(environ=environ)
    except ConfigError:  # a test of a bad setting: the server itself reports it
        settings = load_settings(environ={})
    key = (folder, settings.encoder_precision, settings.verifier_precision)
    if key not in _models_ready:
        from semcache.cache.verifier import VerifiedDecision
        from semcache.embed import Encoder

        Encoder(models_dir=folder, precision=settings.encoder_precision)
        VerifiedDecision(models_dir=folder, precision=settings.verifier_precision)
        _models_ready.add(key)


class ServerProcess:
    """``python -m semcache <command>`` as a child process, waited on until it answers."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        health_path: str = "/healthz",
        log_path: Path | None = None,
        repo: Path = REPO,
    ) -> None:
        self.port = port or free_port()
        # The checkout whose code runs (cwd is first on sys.path for ``-m semcache``): another
        # one for a benchmark's baseline.
        self.repo = repo
        self.args = list(args)
        # Every server reuses one ONNX export of the models (the one in-process tests use)
        # instead of exporting them again into each fresh data dir.
        shared_models = {"SEMCACHE_MODELS_DIR": str(default_models_dir())}
        self.env = {**shared_models, **os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.health_path = health_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        if self.env.get("SEMCACHE_MODELS_DIR"):
            _prepare_models(self.env["SEMCACHE_MODELS_DIR"], self.env)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "semcache", *self.args, "--port", str(self.port)],
            cwd=self.repo,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early with {self.proc.returncode}")
            try:
                if httpx.get(self.url + self.health_path, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become healthy in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m semcache ARGS`` from the repository root, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "semcache", *args],
        cwd=REPO,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
