"""Helpers for the tests that run ``semcache serve`` on a real data dir: its SQLite rows, a
bounded wait, and the cache-aside calls of model "m"."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = ["db_rows", "lookup", "store", "wait_for"]


def db_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def wait_for(predicate: Any, timeout: float, what: str, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def store(client: httpx.Client, query: str, response: Any) -> httpx.Response:
    return client.post("/v1/cache/store", json={"query": query, "model": "m", "response": response})


def lookup(client: httpx.Client, query: str, **extra: Any) -> dict[str, Any]:
    r = client.post("/v1/cache/lookup", json={"query": query, "model": "m", **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body
