"""Whether the configured upstreams can be reached: a TCP connect to each, every few seconds.

``/readyz`` reads the last result (``UpstreamProbe.report``), so a readiness check never waits
on the network and a flood of checks never becomes a flood of connections. The probe opens and
closes a TCP connection to the base URL's host and port: it tells "the upstream is down or
unreachable" from "it answers", without spending a request or a key on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ProbeResult", "UpstreamProbe"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeResult:
    reachable: bool
    checked_at: float
    error: str = ""
    connect_ms: float | None = None


def _host_port(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname or "", parts.port or default


class UpstreamProbe:
    """The last reachability of each upstream, refreshed by ``run`` in the background."""

    def __init__(
        self, upstreams: dict[str, str], *, interval_s: float, timeout_s: float = 2.0
    ) -> None:
        self.upstreams = dict(upstreams)  # name -> base URL
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._results: dict[str, ProbeResult] = {}

    async def check(self, name: str) -> ProbeResult:
        """Connect to one upstream now; records and returns the result."""
        host, port = _host_port(self.upstreams[name])
        started = time.perf_counter()
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=self.timeout_s
            )
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            result = ProbeResult(False, time.time(), f"cannot connect to {host}:{port}: {reason}")
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            ms = round((time.perf_counter() - started) * 1000, 2)
            result = ProbeResult(True, time.time(), connect_ms=ms)
        previous = self._results.get(name)
        if previous is not None and previous.reachable != result.reachable:
            if result.reachable:
                log.warning("upstream %s is reachable again", name)
            else:
                log.warning("upstream %s is unreachable: %s", name, result.error)
        self._results[name] = result
        return result

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(name) for name in self.upstreams))

    async def run(self) -> None:
        """Probe every upstream now and then every ``interval_s`` until cancelled."""
        while True:
            await self.check_all()
            await asyncio.sleep(self.interval_s)

    @property
    def degraded(self) -> bool:
        """True once some upstream's last probe failed."""
        return any(not r.reachable for r in self._results.values())

    def report(self) -> dict[str, dict[str, Any]]:
        """Per upstream: its URL and the last probe (``reachable`` is None before the first)."""
        out: dict[str, dict[str, Any]] = {}
        for name, url in self.upstreams.items():
            result = self._results.get(name)
            entry: dict[str, Any] = {"url": url, "reachable": None}
            if result is not None:
                entry["reachable"] = result.reachable
                entry["checked_at"] = round(result.checked_at, 3)
                if result.connect_ms is not None:
                    entry["connect_ms"] = result.connect_ms
                if result.error:
                    entry["error"] = result.error
            out[name] = entry
        return out
