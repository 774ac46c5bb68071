"""A real headless browser for tests: Debian's chromium driven by playwright.

``scripts/_venv.sh`` installs chromium with apt-get when /usr/bin/chromium is missing (and
playwright comes with the dev extras); playwright's own browser downloads are never used.
``headless_page()`` skips the test, saying why, only when chromium really is not there.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CHROMIUM", "headless_page"]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def headless_page(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A fresh page in a fresh chromium profile; page errors fail the test."""
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"{CHROMIUM} is missing and could not be installed (scripts/_venv.sh runs "
            "`apt-get install -y chromium`; it needs root and Debian's package archive)"
        )
    playwright_api = pytest.importorskip("playwright.sync_api")
    profile = tempfile.mkdtemp(prefix="semcache-chromium-")
    errors: list[str] = []
    try:
        with playwright_api.sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=ARGS,
                viewport={"width": width, "height": height},
            )
            try:
                page = context.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert not errors, f"errors on the page: {errors}"
