"""The simulator's FastAPI app: provider endpoints plus ``/sim/*`` introspection and control."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .anthropic_api import add_anthropic_routes
from .config import SimulatorConfig
from .embeddings_api import add_embeddings_routes
from .intake import check_api_key
from .openai_api import add_openai_routes
from .responses_api import add_responses_routes
from .state import SimulatorState
from .wire_errors import WireError, render_anthropic_error, render_openai_error

__all__ = ["create_simulator_app", "simulator_state"]

# A fixed creation time keeps /v1/models byte-identical across runs.
_MODELS_CREATED = 1_700_000_000


def simulator_state(app: FastAPI) -> SimulatorState:
    """The state object of an app made by ``create_simulator_app``."""
    state = app.state.simulator
    if not isinstance(state, SimulatorState):
        raise TypeError("this app was not made by create_simulator_app")
    return state


def create_simulator_app(config: SimulatorConfig) -> FastAPI:
    """A fresh simulated upstream; each app has its own counters, faults and cache memory."""
    state = SimulatorState(config)
    app = FastAPI(
        title="semcache upstream simulator",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.simulator = state
    add_openai_routes(app, state)
    add_responses_routes(app, state)
    add_embeddings_routes(app, state)
    add_anthropic_routes(app, state)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        # The anthropic SDK always sends anthropic-version; answer it in its own list shape.
        anthropic = "anthropic-version" in request.headers
        try:
            check_api_key(request, state)
        except WireError as exc:
            return render_anthropic_error(exc) if anthropic else render_openai_error(exc)
        if anthropic:
            data: list[dict[str, Any]] = [
                {
                    "type": "model",
                    "id": model,
                    "display_name": model,
                    "created_at": "2023-11-14T22:13:20Z",
                }
                for model in config.models
            ]
            return JSONResponse(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                }
            )
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": model,
                        "object": "model",
                        "created": _MODELS_CREATED,
                        "owned_by": "semcache-simulator",
                    }
                    for model in config.models
                ],
            }
        )

    @app.get("/sim/stats")
    async def stats() -> dict[str, Any]:
        return state.stats()

    @app.get("/sim/requests")
    async def recent_requests() -> list[dict[str, Any]]:
        return state.recent()

    @app.post("/sim/reset")
    async def reset() -> dict[str, Any]:
        state.reset()
        return state.stats()

    @app.get("/sim/faults")
    async def pending_faults() -> dict[str, Any]:
        return {"faults": state.faults.pending()}

    @app.post("/sim/faults")
    async def schedule_faults(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        faults = body.get("faults") if isinstance(body, dict) else None
        if not isinstance(faults, list) or not all(f is None or isinstance(f, str) for f in faults):
            return _sim_error('body must be {"faults": [name or null, ...]}')
        try:
            state.faults.replace(faults)
        except ValueError as exc:
            return _sim_error(str(exc))
        return JSONResponse({"faults": state.faults.pending()})

    return app


def _sim_error(message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": None}},
        status_code=400,
    )
