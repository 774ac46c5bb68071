"""What routers need from the app: its services and the caller's identity."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from ..cache.service import CacheService
from ..config import Settings
from ..embed.batcher import MicroBatcher
from ..embed.encoder import Encoder
from ..levers.usage import UsageService
from ..metrics import CacheMetrics
from ..proxy.flow import ProxyService
from ..store.base import CacheStore
from ..upstream.client import UpstreamClient
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


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def principal_of(request: Request) -> Principal:
    """The authenticated caller, or a 401."""
    return services_of(request).keyring.authenticate(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
