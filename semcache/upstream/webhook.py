"""Posting a JSON notification to an operator's webhook (spend alerts)."""

from __future__ import annotations

from typing import Any

import httpx

from ..errors import UpstreamUnavailable

__all__ = ["post_webhook"]


async def post_webhook(url: str, payload: dict[str, Any], *, timeout_s: float = 5.0) -> None:
    """POST ``payload``; ``UpstreamUnavailable`` when it cannot be delivered."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            await client.post(url, json=payload)
    except httpx.HTTPError as exc:
        raise UpstreamUnavailable(f"webhook {url} failed: {exc}") from exc
