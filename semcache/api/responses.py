"""The JSON response every semcache route answers with: Starlette's, encoded by orjson.

The standard library's encoder was a few percent of an exact hit's CPU time
(benchmarks/results/hot_path_profile.md); orjson writes the same compact UTF-8 JSON several
times faster. A value orjson refuses (an integer beyond 64 bits, which an upstream's answer
parsed by the standard library can hold) falls back to Starlette's encoder, so every answer
that rendered before still renders.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse

__all__ = ["JsonResponse"]


class JsonResponse(JSONResponse):
    """``JSONResponse`` rendered by orjson (the standard library's encoder as a fallback)."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except orjson.JSONEncodeError:
            return super().render(content)
