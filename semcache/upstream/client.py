"""Calls to the upstream providers: auth headers, timeouts, retries, error translation."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson

from ..errors import (
    ClientError,
    SemcacheError,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ..wire.base import OPENAI
from .retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after

__all__ = [
    "ProviderEndpoint",
    "UpstreamClient",
    "UpstreamConfig",
    "UpstreamObserver",
    "UpstreamReply",
]

log = logging.getLogger(__name__)


# Client headers worth passing on: they select API behaviour, not identity.
_FORWARDED_HEADERS = (
    "anthropic-version",
    "anthropic-beta",
    "openai-organization",
    "openai-project",
)


@dataclass(frozen=True)
class ProviderEndpoint:
    """Where one provider lives and the key semcache uses there."""

    base_url: str
    api_key: str = ""
    # Overrides the shared read timeout for this provider (slow reasoning models, say).
    read_timeout_s: float | None = None


@dataclass(frozen=True)
class UpstreamConfig:
    """Upstream endpoints, timeouts and retry policy."""

    openai: ProviderEndpoint = ProviderEndpoint("https://api.openai.com/v1")
    anthropic: ProviderEndpoint = ProviderEndpoint("https://api.anthropic.com")
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    anthropic_version: str = "2023-06-01"
    forward_headers: tuple[str, ...] = ()

    def forwards(self, header: str) -> bool:
        """Whether a client header (lower-case) goes upstream as it is."""
        if header in _FORWARDED_HEADERS:
            return True
        for pattern in self.forward_headers:
            if (pattern.endswith("*") and header.startswith(pattern[:-1])) or header == pattern:
                return True
        return False


class UpstreamObserver(Protocol):
    """Told about every upstream call attempt (semcache.metrics.CacheMetrics is one)."""

    def upstream_attempt(self, provider: str, model: str, status: str, seconds: float) -> None:
        """An attempt ended: ``status`` is the HTTP status, ``timeout`` or ``connect_error``."""

    def upstream_retry(self, provider: str, model: str, status: str) -> None:
        """An attempt that ended with ``status`` is being retried."""


class _NoObserver:
    def upstream_attempt(self, provider: str, model: str, status: str, seconds: float) -> None:
        pass

    def upstream_retry(self, provider: str, model: str, status: str) -> None:
        pass


class UpstreamReply:
    """A 200 answer from an upstream, plain or streamed.

    Its reads translate transport failures into semcache's errors, so nothing above
    ``upstream/`` sees httpx: a connection that breaks mid-answer is a 502.
    """

    def __init__(self, provider: str, response: httpx.Response) -> None:
        self.provider = provider
        self._response = response

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._response.headers)

    def json(self) -> dict[str, Any]:
        """The (already read) body of a plain answer, parsed strictly: a NaN stored would
        break every later hit on it."""
        try:
            answer = orjson.loads(self._response.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamBadResponse(
                f"the {self.provider} upstream answered 200 with invalid JSON"
            ) from exc
        if not isinstance(answer, dict):
            raise UpstreamBadResponse(
                f"the {self.provider} upstream answered 200 with JSON that is no object"
            )
        return answer

    async def chunks(self) -> AsyncIterator[bytes]:
        """The raw bytes of a streamed answer as they arrive."""
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamBadResponse(
                f"the {self.provider} upstream stream broke off ({type(exc).__name__})"
            ) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class UpstreamClient:
    """One pooled httpx client per process; ``send`` returns only 200 responses."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: UpstreamObserver | None = None,
    ):
        self.config = config
        self.observer: UpstreamObserver = observer or _NoObserver()
        timeout = httpx.Timeout(
            config.read_timeout_s, connect=config.connect_timeout_s, pool=config.connect_timeout_s
        )
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _timeout(self, provider: str) -> httpx.Timeout:
        endpoint = self.config.openai if provider == OPENAI else self.config.anthropic
        return httpx.Timeout(
            endpoint.read_timeout_s or self.config.read_timeout_s,
            connect=self.config.connect_timeout_s,
            pool=self.config.connect_timeout_s,
        )

    def _url_and_headers(
        self, provider: str, path: str, client_key: str | None, client_headers: dict[str, str]
    ) -> tuple[str, dict[str, str]]:
        endpoint = self.config.openai if provider == OPENAI else self.config.anthropic
        key = client_key or endpoint.api_key
        headers = {"content-type": "application/json"}
        headers.update({k: v for k, v in client_headers.items() if self.config.forwards(k)})
        if provider == OPENAI:
            if key:
                headers["authorization"] = f"Bearer {key}"
        else:
            headers.setdefault("anthropic-version", self.config.anthropic_version)
            if key:
                headers["x-api-key"] = key
        return endpoint.base_url.rstrip("/") + path, headers

    async def get_json(self, provider: str, path: str, *, client_key: str | None = None) -> Any:
        """GET a JSON document (the model list) from an upstream."""
        url, headers = self._url_and_headers(provider, path, client_key, {})
        try:
            response = await self._http.get(url, headers=headers)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"{provider} upstream timed out") from exc
        except httpx.TransportError as exc:
            raise _transport_error(provider, exc) from exc
        if response.status_code != 200:
            raise upstream_error(provider, response.status_code, response.content, response.headers)
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamBadResponse(f"{provider} upstream sent invalid JSON") from exc

    async def send(
        self,
        provider: str,
        path: str,
        body: dict[str, Any],
        *,
        stream: bool,
        client_key: str | None = None,
        client_headers: dict[str, str] | None = None,
    ) -> UpstreamReply:
        """POST ``body``; retry transient failures; raise a ``SemcacheError`` for the rest.

        With ``stream=True`` the returned reply is open and the caller must ``aclose`` it.
        Retries happen only here, before a single byte has gone to the client.
        """
        url, headers = self._url_and_headers(provider, path, client_key, client_headers or {})
        content = json.dumps(body).encode()
        model = str(body.get("model", ""))
        attempt = 0
        while True:
            error: SemcacheError
            retry_after: float | None = None
            started = time.perf_counter()
            try:
                request = self._http.build_request(
                    "POST", url, content=content, headers=headers, timeout=self._timeout(provider)
                )
                response = await self._http.send(request, stream=stream)
            except httpx.TimeoutException as exc:
                error = UpstreamTimeout(f"{provider} upstream timed out ({type(exc).__name__})")
                error.__cause__ = exc
                status = "timeout"
            except httpx.TransportError as exc:
                error = _transport_error(provider, exc)
                error.__cause__ = exc
                status = "connect_error" if isinstance(error, UpstreamUnavailable) else "broken"
            else:
                status = str(response.status_code)
                if response.status_code == 200:
                    seconds = time.perf_counter() - started
                    self.observer.upstream_attempt(provider, model, status, seconds)
                    return UpstreamReply(provider, response)
                raw = await response.aread()
                await response.aclose()
                error = upstream_error(provider, response.status_code, raw, response.headers)
                if response.status_code not in RETRYABLE_STATUSES:
                    self.observer.upstream_attempt(
                        provider, model, status, time.perf_counter() - started
                    )
                    raise error
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            self.observer.upstream_attempt(provider, model, status, time.perf_counter() - started)
            delay = self.config.retry.delay(attempt, retry_after)
            if delay is None:
                raise error
            self.observer.upstream_retry(provider, model, status)
            log.info("retrying %s %s in %.2fs after: %s", provider, path, delay, error.message)
            await asyncio.sleep(delay)
            attempt += 1


def _transport_error(provider: str, exc: httpx.TransportError) -> SemcacheError:
    """503 when the upstream could not be reached; 502 when it took the request and then broke
    off (a dropped connection, a garbled answer): a gateway's bad response, not unavailability."""
    if isinstance(exc, httpx.ConnectError | httpx.ProxyError | httpx.UnsupportedProtocol):
        return UpstreamUnavailable(f"cannot reach the {provider} upstream: {exc}")
    return UpstreamBadResponse(
        f"the {provider} upstream broke off its answer ({type(exc).__name__}: {exc})"
    )


def upstream_error(
    provider: str, status: int, raw: bytes, headers: httpx.Headers | dict[str, str]
) -> SemcacheError:
    """Translate an upstream error status into semcache's error tree, keeping its reason."""
    reason, upstream_code = _reason(raw)
    detail = f"{provider} upstream answered {status}: {reason}"
    passed: dict[str, str] = {}
    retry_after = headers.get("retry-after")
    if retry_after:
        passed["Retry-After"] = retry_after
    if status in (400, 404, 409, 413, 422):
        # The request itself was wrong (bad field, context too long): the client's to fix.
        error: SemcacheError = ClientError(detail, code=upstream_code or f"upstream_{status}")
        error.status_code = status
        return error
    if status in (401, 403):
        return UpstreamBadResponse(f"{provider} upstream refused the credentials: {reason}")
    if status in (429, 503, 529):
        return UpstreamUnavailable(detail, headers=passed)
    if status == 504:
        return UpstreamTimeout(detail)
    return UpstreamBadResponse(detail)


def _reason(raw: bytes) -> tuple[str, str | None]:
    try:
        body = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", "replace").strip()
        return (text[:300] or "no reason given"), None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return str(error.get("message") or error), (str(code) if code else None)
    return str(body)[:300], None
