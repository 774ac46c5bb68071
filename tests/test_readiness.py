"""Readiness and start-up: /readyz follows the upstream (probed in the background), typos fail
before the model loads, one start-up line says what loaded, text logs share one format, and
./scripts/serve takes relative paths from the caller's folder."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import REPO, ServerProcess, free_port

from semcache.cli import resolve_paths
from semcache.config import load_settings


def _simulator(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "semcache", "simulate-upstream", "--port", str(port)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the simulator exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/sim/stats", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the simulator did not start: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for(url: str, status: str, timeout: float = 15.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        r = httpx.get(url, timeout=5)
        body = r.json()
        if body["status"] == status:
            assert r.status_code == 200, r.text
            return body
        time.sleep(0.2)
    raise AssertionError(f"/readyz never said {status}: {body}")


class Upstream:
    """The simulator as a child process, on a port that stays the same across restarts."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = _simulator(self.port, self.log)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    running = Upstream(tmp_path_factory.mktemp("simulator") / "simulator.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def server(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("readiness")
    env = {
        "SEMCACHE_OPENAI_BASE_URL": f"http://127.0.0.1:{upstream.port}/v1",
        "SEMCACHE_OPENAI_API_KEY": "sk-upstream-openai",
        "SEMCACHE_UPSTREAM_PROBE_INTERVAL_S": "0.3",
        "SEMCACHE_HIT_DECISION": "cosine",
        "SEMCACHE_API_KEYS": "",
        "SEMCACHE_API_KEYS_FILE": "",
    }
    with ServerProcess(
        ["serve", "--data-dir", str(data)], env=env, log_path=data / "server.log"
    ) as running:
        yield running


def test_readyz_turns_degraded_when_the_upstream_stops_and_ready_when_it_returns(
    server: ServerProcess, upstream: Upstream
) -> None:
    ready = _wait_for(server.url + "/readyz", "ready")
    assert ready["store"] == {"status": "ok"}
    upstreams = ready["upstreams"]
    assert isinstance(upstreams, dict)
    # Only the configured upstream is probed: Anthropic has neither a key nor a URL here.
    assert set(upstreams) == {"openai"}
    assert upstreams["openai"]["reachable"] is True

    # The simulator stops: "degraded", still 200 (hits and the cache API are served).
    upstream.stop()
    degraded = _wait_for(server.url + "/readyz", "degraded")
    assert degraded["upstreams"]["openai"]["reachable"] is False  # type: ignore[index]
    assert "openai" in str(degraded["reason"])
    lookup = httpx.post(
        server.url + "/v1/cache/lookup", json={"query": "still served?", "model": "m"}, timeout=30
    )
    assert lookup.status_code == 200

    # It comes back on the same port: ready again.
    upstream.start()
    _wait_for(server.url + "/readyz", "ready")


def test_start_up_line_and_one_text_format(server: ServerProcess) -> None:
    httpx.post(
        server.url + "/v1/cache/lookup", json={"query": "format probe", "model": "m"}, timeout=30
    )
    time.sleep(0.3)
    assert server.log_path is not None
    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    # Every record, semcache's, uvicorn's and the libraries', starts the same way (the further
    # lines of a message over several are indented).
    shape = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) \S+: ")
    odd = [x for x in lines if not shape.match(x) and not x.startswith("    ")]
    assert not odd, odd
    assert any(" uvicorn.error: " in line for line in lines)
    (start,) = [line for line in lines if "semcache listening on" in line]
    assert "store sqlite" in start and "entries" in start
    assert "runtime onnx, int8 encoder (cosine hits)" in start
    assert "open (no API keys)" in start and "levers defaults" in start
    assert "upstreams openai http://127.0.0.1:" in start
    request = [line for line in lines if " semcache.request: POST /v1/cache/lookup 200 " in line]
    assert request and "tenant=default" in request[-1] and "cache=MISS" in request[-1]
    assert "format probe" not in "\n".join(lines)


# -- typos fail fast -------------------------------------------------------------------------


def _serve(*args: str, cwd: Path = REPO, script: bool = False) -> tuple[float, str, int]:
    """Run serve; (CPU seconds it used, stderr, exit status). CPU time, not wall time: this
    machine may be busy with other work, and what matters is that nothing heavy ran."""
    command = [str(REPO / "scripts" / "serve")] if script else [sys.executable, "-m", "semcache"]
    command += [] if script else ["serve"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [*command, *args, "--port", str(free_port())],
        cwd=cwd,
        env={**os.environ, "SEMCACHE_API_KEYS": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, result.stderr, result.returncode


def test_a_misspelt_setting_fails_fast_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "semcache.toml"
    config.write_text('log_fromat = "json"\n')
    took, stderr, code = _serve("--config", str(config), "--data-dir", str(tmp_path))
    assert code == 2 and "unknown setting 'log_fromat'" in stderr, stderr
    # Well under a second of CPU: nothing heavy is imported, the model never loads (loading it
    # takes several seconds of CPU); 2 s is a generous bound.
    assert took < 2.0, f"took {took:.1f} s of CPU"


def test_a_bad_levers_file_fails_before_the_model_loads(tmp_path: Path) -> None:
    levers = tmp_path / "levers.toml"
    levers.write_text("[queue]\nmax_wiat_s = 3\n")
    config = tmp_path / "semcache.toml"
    config.write_text(f'levers_file = "{levers}"\n')
    took, stderr, code = _serve("--config", str(config), "--data-dir", str(tmp_path))
    assert code == 2 and "queue.max_wiat_s" in stderr, stderr
    assert took < 2.0, f"took {took:.1f} s of CPU"


def test_a_bad_api_key_line_fails_fast_without_echoing_the_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("sk-secret-one=acme:free:admn\n")
    took, stderr, code = _serve("--data-dir", str(tmp_path), "--config", str(_cfg(tmp_path, keys)))
    assert code == 2 and "unknown key attribute 'admn'" in stderr, stderr
    assert "sk-secret-one" not in stderr
    assert took < 2.0, f"took {took:.1f} s of CPU"


def _cfg(folder: Path, keys: Path) -> Path:
    config = folder / "keys.toml"
    config.write_text(f'api_keys_file = "{keys}"\n')
    return config


def test_scripts_serve_resolves_relative_paths_from_the_callers_folder(tmp_path: Path) -> None:
    # Relative names: the config file, and the levers file it names, are in the caller's
    # folder, not the repository root scripts/serve runs from.
    (tmp_path / "semcache.toml").write_text('levers_file = "levers.toml"\n')
    (tmp_path / "levers.toml").write_text("[anomaly]\nfactr = 3\n")
    _, stderr, code = _serve("--config", "semcache.toml", cwd=tmp_path, script=True)
    assert code == 2, stderr
    assert "anomaly.factr" in stderr and str(tmp_path / "levers.toml") in stderr, stderr


def test_resolve_paths_leaves_defaults_and_absolute_paths() -> None:
    settings = load_settings(
        environ={}, overrides={"levers_file": "l.toml", "pricing_file": "/abs/p.toml"}
    )
    resolved = resolve_paths(settings, "/caller")
    assert resolved.levers_file == "/caller/l.toml"
    assert resolved.pricing_file == "/abs/p.toml"
    assert resolved.data_dir == "index_data"  # the default stays in the repository
    assert resolve_paths(settings, None) is settings
