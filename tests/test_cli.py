"""Start-up errors print one clear line and exit non-zero; --help documents every setting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from servers import REPO, free_port

from semcache.config import settings_table


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "semcache", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("semcache: error: ")
    assert words in lines[0]
    assert "Traceback" not in result.stderr


def test_help_documents_every_setting() -> None:
    result = run("--help")
    assert result.returncode == 0
    for name, _, help_text in settings_table():
        assert f"SEMCACHE_{name.upper()}" in result.stdout
        assert help_text in result.stdout.replace("\n      ", " ")


def test_port_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--port", str(port), "--data-dir", str(tmp_path))
    one_line_error(result, "already in use")


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run("serve", "--port", str(free_port()), "--data-dir", str(blocker / "data"))
    one_line_error(result, "not writable")


def test_bad_config_file(tmp_path: Path) -> None:
    config = tmp_path / "semcache.toml"
    config.write_text("treshold = 0.8\n")
    result = run("serve", "--config", str(config), "--data-dir", str(tmp_path))
    one_line_error(result, "unknown setting 'treshold'")
    config.write_text("threshold = [\n")
    one_line_error(run("serve", "--config", str(config)), "not valid TOML")
    config.write_text("threshold = 3.0\n")
    one_line_error(run("serve", "--config", str(config)), "threshold must be")
    one_line_error(run("serve", "--config", str(tmp_path / "missing.toml")), "cannot read")


def test_bad_environment_value(tmp_path: Path) -> None:
    result = run("serve", "--data-dir", str(tmp_path), env={"SEMCACHE_PORT": "eighty"})
    one_line_error(result, "port must be a int")


def test_refuses_public_bind_without_keys(tmp_path: Path) -> None:
    result = run(
        "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path), env={"SEMCACHE_API_KEYS": ""}
    )
    one_line_error(result, "--insecure")
