"""The OpenAI- and Anthropic-compatible proxy endpoints: chat completions, messages, the
Responses API, embeddings, and the model list."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from ..errors import InvalidRequest, SemcacheError
from ..levers.budgets import is_urgent
from ..proxy.call import ProxyCall, ProxyResponse
from ..proxy.controls import RequestControls
from ..proxy.policy import Caller
from ..requestlog import note, prompt_text
from ..wire import ANTHROPIC, ANTHROPIC_WIRE, OPENAI, OPENAI_WIRE, RESPONSES_WIRE, Wire
from .body import read_json
from .deps import principal_of, services_of
from .responses import JsonResponse

__all__ = ["router"]

router = APIRouter()


def _client_key(request: Request) -> str | None:
    """The provider key to send upstream when ``forward_client_key`` is on."""
    services = services_of(request)
    if not services.settings.forward_client_key:
        return None
    explicit = request.headers.get("x-upstream-api-key")
    if explicit:
        return explicit.strip()
    if services.keyring.open:
        # No semcache keys: the key the client sent is its provider key.
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.headers.get("x-api-key")
    return None


async def _handle(request: Request, wire: Wire) -> Response:
    call = await _call(request, wire)
    return _render(await _answer(request, call, services_of(request).proxy.handle))


async def _answer(
    request: Request, call: ProxyCall, handle: Callable[[ProxyCall], Awaitable[ProxyResponse]]
) -> ProxyResponse:
    """The flow's answer; a request refused or failed on the way is an attribution row too."""
    started = time.perf_counter()
    try:
        return await handle(call)
    except SemcacheError as exc:
        policy = services_of(request).proxy.policy
        policy.reject(call.caller, str(call.body.get("model", "")), exc, started)
        raise


async def _call(request: Request, wire: Wire) -> ProxyCall:
    """The proxied request: its body, caller, cache controls and upstream key."""
    services = services_of(request)
    principal = principal_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_body")
    controls = RequestControls.from_headers(request.headers)
    note(model=str(body.get("model", "")), feature=controls.feature, user=controls.user)
    if services.settings.log_prompts:
        note(prompt=prompt_text(body))
    caller = Caller(
        tenant=principal.tenant,
        tier=principal.tier,
        key_id=principal.key_id,
        user=controls.user,
        feature=controls.feature,
        task=request.headers.get("x-semcache-task") or None,
        urgent=is_urgent(request.headers.get("x-semcache-urgency")),
    )
    return ProxyCall(
        wire=wire,
        caller=caller,
        body=body,
        controls=controls,
        client_key=_client_key(request),
        client_headers={k.lower(): v for k, v in request.headers.items()},
    )


def _render(response: ProxyResponse) -> Response:
    if response.stream is not None:
        headers = {**response.headers, "Cache-Control": "no-cache"}
        return StreamingResponse(response.stream, media_type="text/event-stream", headers=headers)
    return JsonResponse(response.body, status_code=response.status_code, headers=response.headers)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _handle(request, OPENAI_WIRE)


@router.post("/v1/messages")
async def messages(request: Request) -> Response:
    return await _handle(request, ANTHROPIC_WIRE)


@router.post("/v1/responses")
async def responses(request: Request) -> Response:
    return await _handle(request, RESPONSES_WIRE)


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    call = await _call(request, OPENAI_WIRE)
    return _render(await _answer(request, call, services_of(request).proxy.embeddings.handle))


@router.get("/v1/models")
async def models(request: Request) -> JsonResponse:
    """The upstream's model list, in the format of the SDK that asks."""
    services = services_of(request)
    principal_of(request)
    anthropic = "anthropic-version" in request.headers
    provider, path = (ANTHROPIC, "/v1/models") if anthropic else (OPENAI, "/models")
    listing: Any = await services.upstream.get_json(provider, path, client_key=_client_key(request))
    return JsonResponse(listing)
