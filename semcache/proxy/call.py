"""One proxied request as the flow sees it, and what the flow hands back to the HTTP layer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..store.base import Partition
from ..wire.base import Wire
from .controls import RequestControls
from .policy import Admission, Caller, Policy

__all__ = ["ProxyCall", "ProxyConfig", "ProxyResponse"]


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy's own settings."""

    max_temperature: float = 1.0
    stale_if_error_s: float = 0.0


@dataclass
class ProxyResponse:
    """What the HTTP layer sends: a JSON body or a stream of SSE bytes, with headers."""

    headers: dict[str, str]
    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None
    status_code: int = 200


@dataclass(frozen=True)
class ProxyCall:
    """One client request, as the flow needs it."""

    wire: Wire
    caller: Caller
    body: dict[str, Any]
    controls: RequestControls
    client_key: str | None = None
    client_headers: dict[str, str] = field(default_factory=dict)
    admission: Admission | None = None

    @property
    def tenant(self) -> str:
        return self.caller.tenant

    def account(
        self, policy: Policy, status: str, model: str, answer: Any, upstream: bool
    ) -> dict[str, str]:
        """Cost and attribution for this call's answer; the cost headers."""
        assert self.admission is not None
        return policy.account(
            self.caller,
            self.admission,
            self.wire.provider,
            status=status,
            model=model,
            answer=answer if isinstance(answer, dict) else None,
            from_upstream=upstream,
        )

    @property
    def model(self) -> str:
        return str(self.body["model"])

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def partition(self) -> Partition:
        # The wire format is part of the model key: an OpenAI completion must never answer an
        # Anthropic client (or a Responses API one), even for the same model name.
        return self.partition_in(self.wire.cache_scope)

    def partition_in(self, scope: str) -> Partition:
        """This call's partition for answers in the format ``scope`` names."""
        model = f"{scope}:{self.model}"
        return Partition(self.tenant, self.controls.namespace, model, self.controls.doc_version)
