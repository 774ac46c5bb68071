"""What routers need from the app: its services and the caller's identity."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from ..cache.service import CacheService
from ..config import Settings
from ..embed.batcher import MicroBatcher
from ..embed.encoder import Encoder
from ..levers.usage import UsageService
from ..metrics import CacheMetrics
from ..proxy.flow import ProxyService
from ..requestlog import RequestJournal, note
from ..store.base import CacheStore
from ..telemetry import Tracing
from ..upstream.client import UpstreamClient
from ..upstream.probe import UpstreamProbe
from .auth import KeyRing, Principal

__all__ = ["Services", "principal_of", "services_of"]


@dataclass
class Services:
    """Everything one app instance runs on, built once at start-up."""

    settings: Settings
    keyring: KeyRing
    encoder: Encoder
    store: CacheStore
    batcher: MicroBatcher
    metrics: CacheMetrics
    cache: CacheService
    upstream: UpstreamClient
    proxy: ProxyService
    usage: UsageService
    # The last requests of this process, for the dashboard's recent lists.
    journal: RequestJournal = field(default_factory=RequestJournal)
    # Reachability of the configured upstreams, for /readyz (None: nothing probed).
    probe: UpstreamProbe | None = None
    # Where spans go; off (a no-op) when no OTLP endpoint is configured.
    tracing: Tracing = field(default_factory=Tracing.off)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def principal_of(request: Request) -> Principal:
    """The authenticated caller, or a 401; its tenant goes into the request log."""
    principal = services_of(request).keyring.authenticate(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    note(tenant=principal.tenant)
    return principal
