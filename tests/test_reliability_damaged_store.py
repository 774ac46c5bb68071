"""Store reliability: a damaged database refuses to start, says why, and keeps the index files.

Real ``semcache serve`` processes on a copy of a populated data dir (SQLite in WAL mode + FAISS
files), damaged the ways a disk or an operator damages them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from data_dir_helpers import db_rows, store, wait_for
from servers import REPO, ServerProcess, free_port

# -- 4. a damaged store refuses to start, says why, and keeps the index files ------------------


@pytest.fixture(scope="module")
def populated_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir a real server wrote ~300 entries and a saved index to, then stopped cleanly."""
    data = tmp_path_factory.mktemp("populated")
    server = ServerProcess(
        ["serve", "--data-dir", str(data)],
        env={"SEMCACHE_INDEX_SAVE_INTERVAL_S": "0.2"},
        log_path=data / "server.log",
    )
    topics = ["billing", "passwords", "exports", "webhooks", "invoices", "SSO", "quotas", "backups"]
    failures: list[str] = []

    def fill(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for n in range(worker, 300, 4):
                query = f"How do I set up {topics[n % len(topics)]} for workspace {n}?"
                r = store(client, query, {"n": n, "text": "step " * 20})
                if r.status_code != 201:
                    failures.append(f"{r.status_code} {r.text}")

    with server:
        workers = [threading.Thread(target=fill, args=(w,)) for w in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(300)
        assert not failures, failures[:3]
        wait_for(lambda: any((data / "faiss").glob("*.faiss")), 15, "an index save")
        time.sleep(0.5)
    # Stopped with SIGTERM: the server saved its indexes and closed SQLite. Closing this last
    # connection checkpoints whatever the WAL still holds into the main file.
    assert db_rows(data / "semcache.db", "SELECT count(*) FROM entries") == [(300,)]
    wal = data / "semcache.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    return data


def _attempt_start(data: Path, timeout: float = 240.0) -> tuple[int | None, bool, str, str]:
    """Run ``semcache serve`` on ``data``: (exit status or None, whether it served, out, err)."""
    port = free_port()
    out_path, err_path = data.parent / "attempt.out", data.parent / "attempt.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "semcache",
                "serve",
                "--data-dir",
                str(data),
                "--port",
                f"{port}",
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=err,
        )
        served = False
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    if r.status_code == 200:
                        served = True
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        finally:
            rc = proc.poll()
            if rc is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return rc, served, out_path.read_text(errors="replace"), err_path.read_text(errors="replace")


def _damage(data: Path, how: str) -> None:
    db = data / "semcache.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    if how == "empty":
        with open(db, "r+b") as f:
            f.truncate(0)
        return
    raw = db.read_bytes()
    page_size = int.from_bytes(raw[16:18], "big")
    pages = len(raw) // page_size
    assert page_size == 4096 and pages >= 40, (page_size, pages)
    # Pages are numbered from 1; page n starts at (n - 1) * page_size.
    first = 3 if how == "early_pages" else pages // 2
    rng = np.random.default_rng(7)
    with open(db, "r+b") as f:
        for page in range(first, first + 6):
            f.seek((page - 1) * page_size)
            f.write(rng.integers(0, 256, page_size, dtype=np.uint8).tobytes())


@pytest.mark.parametrize(
    ("how", "says"),
    [
        pytest.param("empty", r"database|semcache\.db", id="empty"),
        pytest.param("early_pages", r"damaged|malformed|corrupt", id="early_pages"),
        pytest.param("middle_pages", r"damaged|malformed|corrupt", id="middle_pages"),
    ],
)
def test_damaged_database_refuses_to_start_and_keeps_index_files(
    populated_data_dir: Path, tmp_path: Path, how: str, says: str
) -> None:
    data = tmp_path / "data"
    shutil.copytree(populated_data_dir, data)
    index_files = sorted(p.name for p in (data / "faiss").glob("*.faiss"))
    assert index_files
    _damage(data, how)

    rc, served, out, err = _attempt_start(data)
    left = sorted(p.name for p in (data / "faiss").glob("*.faiss"))
    observed = (
        f"damage={how}: exit status {rc}, served /healthz: {served}, index files before "
        f"{index_files} after {left}; stderr tail: {err[-800:]!r}; stdout tail: {out[-300:]!r}"
    )
    assert not served, "the server started on a damaged database; " + observed
    assert rc is not None and rc != 0, observed
    errors = [line for line in err.splitlines() if line.startswith("semcache: error:")]
    assert errors, "no `semcache: error:` line; " + observed
    assert re.search(says, errors[-1], re.IGNORECASE), observed
    if how != "empty":
        assert re.search(r"database|semcache\.db", errors[-1], re.IGNORECASE), observed
    assert left == index_files, "index files were deleted; " + observed
