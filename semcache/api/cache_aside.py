"""The cache-aside API: the app asks (lookup), calls its LLM on a miss, then stores the answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from ..cache.results import PreparedStore, StoreItem
from ..cache.service import CacheService
from ..errors import InvalidRequest
from ..requestlog import note
from ..store.base import Entry, Partition
from .body import read_model
from .deps import principal_of, services_of
from .responses import JsonResponse

__all__ = ["MAX_BATCH_ENTRIES", "StoreBody", "prepare_store", "router"]

router = APIRouter(prefix="/v1/cache")

Name = Annotated[StrictStr, Field(max_length=200)]
Number = StrictFloat | StrictInt
# Most entries one POST /v1/cache/store/batch takes: a batch is embedded and written whole
# (one transaction) before the answer, so a bigger one would hold a request for many seconds.
MAX_BATCH_ENTRIES = 1000


class ChatMessage(BaseModel):
    """One earlier turn of the conversation a query belongs to."""

    model_config = ConfigDict(extra="allow")
    role: StrictStr
    content: StrictStr | list[dict[str, Any]] | None = None


class _Scoped(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: StrictStr
    model: Name
    namespace: Name = ""
    doc_version: Name = ""
    context: list[ChatMessage] | None = None

    def chat_request(self) -> dict[str, Any]:
        """The query as the chat request the proxy would key on: context, then the query."""
        messages = [m.model_dump(exclude_none=True) for m in self.context or []]
        messages.append({"role": "user", "content": self.query})
        return {"messages": messages}


class LookupBody(_Scoped):
    threshold: Number | None = None


class StoreBody(_Scoped):
    response: Any = Field(...)
    ttl_s: Number | None = None
    metadata: dict[str, Any] | None = None


class StoreBatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: list[StoreBody] = Field(max_length=MAX_BATCH_ENTRIES)


class WrongHitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: StrictStr


class InvalidateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    namespace: Name | None = None
    model: Name | None = None
    doc_version: Name | None = None
    all: bool = False


def _note_query(log_prompts: bool, body: _Scoped) -> None:
    """The request log's model (and, with ``log_prompts``, the query) of a cache call."""
    note(model=body.model)
    if log_prompts:
        note(prompt=body.query)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def entry_json(entry: Entry) -> dict[str, Any]:
    """An entry as the API shows it."""
    return {
        "id": entry.entry_id,
        "query": entry.query,
        "response": entry.response,
        "created_at": _iso(entry.created_at),
        "expires_at": _iso(entry.expires_at),
        "metadata": entry.metadata,
        "namespace": entry.partition.namespace,
        "model": entry.partition.model,
        "doc_version": entry.partition.doc_version,
        "hit_count": entry.hit_count,
        "hit_floor": entry.hit_floor,
    }


@router.post("/lookup")
async def lookup(request: Request) -> JsonResponse:
    services = services_of(request)
    principal = principal_of(request)
    body = await read_model(request, LookupBody, services.settings.max_body_bytes)
    cache = services.cache
    cache.check_query(body.query)
    partition = Partition(principal.tenant, body.namespace, body.model, body.doc_version)
    threshold = None if body.threshold is None else float(body.threshold)
    _note_query(services.settings.log_prompts, body)
    result = await cache.lookup(partition, body.chat_request(), threshold=threshold)
    payload = {
        "hit": result.hit,
        "status": result.status,
        "similarity": result.similarity,
        "entry": entry_json(result.entry) if result.entry else None,
        "miss_reason": result.miss_reason,
        "verifier_score": result.verifier_score,
    }
    note(
        cache=str(result.status),
        similarity=result.similarity,
        miss_reason=result.miss_reason,
        verifier_score=result.verifier_score,
    )
    return JsonResponse(payload, headers=result.headers(cache.clock()))


def prepare_store(cache: CacheService, tenant: str, body: StoreBody) -> PreparedStore:
    """A store body checked as ``POST /v1/cache/store`` checks it (``InvalidRequest``)."""
    cache.check_query(body.query)
    partition = Partition(tenant, body.namespace, body.model, body.doc_version)
    ttl = None if body.ttl_s is None else float(body.ttl_s)
    return cache.prepare_store(
        StoreItem(partition, body.chat_request(), body.response, ttl, body.metadata)
    )


# The store checks' codes and the field of the body each one is about.
_FIELD_OF = {"empty_query": "query", "query_too_long": "query", "invalid_ttl": "ttl_s"}


def _stored_json(entry: Entry) -> dict[str, Any]:
    return {"id": entry.entry_id, "expires_at": _iso(entry.expires_at)}


@router.post("/store", status_code=201)
async def store(request: Request) -> JsonResponse:
    services = services_of(request)
    principal = principal_of(request)
    body = await read_model(request, StoreBody, services.settings.max_body_bytes)
    _note_query(services.settings.log_prompts, body)
    prepared = prepare_store(services.cache, principal.tenant, body)
    (entry,) = await services.cache.store_many([prepared])
    return JsonResponse(_stored_json(entry), status_code=201)


@router.post("/store/batch", status_code=201)
async def store_batch(request: Request) -> JsonResponse:
    """Store up to ``MAX_BATCH_ENTRIES`` entries, all or none: each item means what a
    ``/store`` body means; the answer lists each one's entry in order."""
    services = services_of(request)
    principal = principal_of(request)
    body = await read_model(request, StoreBatchBody, services.settings.max_body_bytes)
    prepared = []
    for n, item in enumerate(body.entries):
        try:
            prepared.append(prepare_store(services.cache, principal.tenant, item))
        except InvalidRequest as exc:
            field = _FIELD_OF.get(exc.code)
            where = f"entries.{n}.{field}" if field else f"entries.{n}"
            raise InvalidRequest(f"{where}: {exc.message}", code=exc.code) from exc
    stored = await services.cache.store_many(prepared)
    return JsonResponse({"entries": [_stored_json(e) for e in stored]}, status_code=201)


@router.get("/entries/{entry_id}")
async def get_entry(entry_id: str, request: Request) -> dict[str, Any]:
    principal = principal_of(request)
    entry = await services_of(request).cache.get(principal.tenant, entry_id)
    return entry_json(entry)


@router.post("/entries/{entry_id}/wrong-hits")
async def report_wrong_hit(entry_id: str, request: Request) -> dict[str, Any]:
    """The entry was served for ``query`` and its answer was wrong for it: queries as far from
    the entry as that one stop hitting it (see ``CacheService.report_wrong_hit``)."""
    services = services_of(request)
    principal = principal_of(request)
    body = await read_model(request, WrongHitBody, services.settings.max_body_bytes)
    entry, similarity = await services.cache.report_wrong_hit(
        principal.tenant, entry_id, body.query
    )
    note(entry_id=entry.entry_id, similarity=similarity, model=entry.partition.model)
    return {"id": entry.entry_id, "similarity": similarity, "hit_floor": entry.hit_floor}


@router.delete("/entries/{entry_id}")
async def delete_entry(entry_id: str, request: Request) -> dict[str, Any]:
    principal = principal_of(request)
    await services_of(request).cache.delete(principal.tenant, entry_id)
    return {"id": entry_id, "deleted": True}


@router.post("/invalidate")
async def invalidate(request: Request) -> dict[str, int]:
    services = services_of(request)
    principal = principal_of(request)
    body = await read_model(request, InvalidateBody, services.settings.max_body_bytes)
    scoped = body.namespace is not None or body.model is not None or body.doc_version is not None
    if not scoped and not body.all:
        # An empty filter would wipe the tenant's whole cache; make that explicit.
        raise InvalidRequest(
            'name at least one of namespace, model, doc_version, or send {"all": true} to '
            "delete every entry of this tenant",
            code="unscoped_invalidate",
        )
    deleted = await services.cache.invalidate(
        principal.tenant,
        namespace=body.namespace,
        model=body.model,
        doc_version=body.doc_version,
    )
    return {"deleted": deleted}


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    principal = principal_of(request)
    result = await services_of(request).cache.stats(principal.tenant)
    return {"tenant": principal.tenant, **result}
