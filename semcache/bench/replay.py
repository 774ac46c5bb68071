"""Replay a prompt stream through a cold cache: hit rate, money saved, latency.

What a team sizing a cache from its logs runs.

Prompts are looked up in arrival order, one at a time, in one partition of a fresh cache over
``SqlFaissStore`` in a temporary folder (the wiring ``semcache serve`` builds, with the shipped
hit decision or a config's). A miss stores the prompt, as the proxy would after the upstream
answered, so a later prompt can hit it. What a hit saves is the upstream call it replaced:
the prompt's input tokens (counted as the proxy counts them) plus an answer of
``output_tokens`` tokens, or the tokens of the record's own ``response`` when it has one,
priced from the pricing table.

A prompt file has no labels, so a replay cannot tell a true hit from a false one; the report
lists every semantic hit with the prompt that served it, so a person can read them. Given such
verdicts (``wrong``), a replay also acts on them as an app would: it reports each wrong hit
(``CacheService.report_wrong_hit``) and stores the prompt with its own answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..cache.service import HIT_EXACT, HIT_SEMANTIC, MISS, WRONG_HIT_IS_OWN_QUESTION
from ..config import Settings
from ..embed.encoder import Encoder
from ..errors import ClientError, InvalidRequest
from ..levers.pricing import PricingTable
from ..levers.tokens import TokenCounter
from ..store.base import Partition
from .hitrate import progress_bar, throwaway_services
from .report import format_rate

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "Prompt",
    "ReplayEvent",
    "ReplayRun",
    "WrongHitJudge",
    "build_replay_report",
    "read_prompts_jsonl",
    "replay",
]

# What an answer is assumed to cost when the record has no response of its own: a typical
# chat answer is a few hundred tokens.
DEFAULT_OUTPUT_TOKENS = 300
SKIPPED = "skipped"
_TENANT = "replay"


@dataclass(frozen=True)
class Prompt:
    """One prompt of the stream: its id, the messages sent, and the answer if the file has it."""

    id: str
    messages: list[dict[str, Any]]
    response: str | None = None

    @property
    def text(self) -> str:
        return str(self.messages[-1].get("content", ""))


@dataclass(frozen=True)
class ReplayEvent:
    """What one lookup gave: the layer, the prompt whose entry served it, tokens, latency."""

    index: int
    status: str
    similarity: float | None
    served_by: int | None
    lookup_s: float
    input_tokens: int
    output_tokens: int
    # A hit the judge called wrong: it was reported and the upstream asked, so it saved nothing.
    reported_wrong: bool = False


@dataclass(frozen=True)
class ReplayRun:
    """Every prompt's event in arrival order, and how the service was set up."""

    prompts: list[Prompt]
    events: list[ReplayEvent]
    model: str
    decision: str
    threshold: float
    seconds: float
    wrong_hits_reported: int = 0


# Whether the answer stored for the second prompt is wrong for the first (None: not known).
WrongHitJudge = Callable[[Prompt, Prompt], bool | None]


def _prompt(record: Any, line: int) -> Prompt:
    if not isinstance(record, dict):
        raise ValueError(f"line {line}: expected a JSON object, got {type(record).__name__}")
    ident = str(record.get("prompt_id", record.get("id", f"line-{line}")))
    messages = record.get("messages")
    text = record.get("prompt", record.get("query"))
    if messages is None:
        if not isinstance(text, str):
            raise ValueError(f'line {line}: give "prompt" (a string) or "messages" (a list)')
        messages = [{"role": "user", "content": text}]
    elif not (
        isinstance(messages, list)
        and messages
        and all(isinstance(m, dict) and "role" in m for m in messages)
    ):
        raise ValueError(f'line {line}: "messages" must be a non-empty list of role messages')
    response = record.get("response")
    if response is not None and not isinstance(response, str):
        raise ValueError(f'line {line}: "response" must be a string')
    return Prompt(ident, messages, response)


def read_prompts_jsonl(path: str | Path) -> list[Prompt]:
    """Prompt JSONL: ``{"prompt": str}`` or ``{"messages": [...]}``, optional id and response.

    ``prompt_id`` or ``id`` names a prompt (default: its line); ``response`` is the answer
    text, used to count the output tokens a hit saves.
    """
    prompts = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                prompts.append(_prompt(json.loads(line), number))
    return prompts


async def _replay(
    prompts: Sequence[Prompt],
    settings: Settings,
    encoder: Encoder,
    *,
    model: str,
    output_tokens: int,
    progress: TextIO | None,
    wrong: WrongHitJudge | None = None,
) -> ReplayRun:
    counter = TokenCounter()
    started = time.perf_counter()
    events: list[ReplayEvent] = []
    reported = 0
    bar = progress_bar(progress, desc="replay", unit="prompt", total=len(prompts))
    async with throwaway_services(settings, encoder, prefix="semcache-replay-") as services:
        cache = services.cache
        partition = Partition(_TENANT, "default", model)
        try:
            for index, prompt in enumerate(prompts):
                bar.update(1)
                request = {"model": model, "messages": prompt.messages}
                tokens_in = counter.estimate_chat_tokens(model, prompt.messages)
                tokens_out = (
                    counter.count_text_tokens(model, prompt.response)
                    if prompt.response is not None
                    else output_tokens
                )
                begun = time.perf_counter()
                try:
                    result = await cache.lookup(partition, request)
                    lookup_s = time.perf_counter() - begun
                    served_by = None
                    wrong_hit = False
                    if result.entry is not None:
                        served_by = int(result.entry.metadata.get("prompt_index", -1))
                        wrong_hit = (
                            result.status == HIT_SEMANTIC
                            and wrong is not None
                            and bool(wrong(prompt, prompts[served_by]))
                        )
                    if wrong_hit and result.entry is not None and result.keys is not None:
                        # The app saw a wrong answer: it says so, then asks upstream and stores.
                        # For the entry's own question (reporting it is refused) the answer is
                        # wrong for everyone: the app deletes it, as the refusal says.
                        entry_id = result.entry.entry_id
                        try:
                            await cache.report_wrong_hit(
                                _TENANT, entry_id, result.keys.semantic_text
                            )
                        except InvalidRequest as exc:
                            if exc.code != WRONG_HIT_IS_OWN_QUESTION:
                                raise
                            await cache.delete(_TENANT, entry_id)
                        reported += 1
                    if result.entry is None or wrong_hit:
                        await cache.store(
                            partition,
                            request,
                            {"prompt_index": index},
                            metadata={"prompt_index": index},
                            keys=result.keys,
                            vector=result.vector,
                        )
                except ClientError:
                    # e.g. an empty or oversized prompt the service refuses: not measurable.
                    events.append(ReplayEvent(index, SKIPPED, None, None, 0.0, tokens_in, 0))
                    continue
                events.append(
                    ReplayEvent(
                        index,
                        result.status,
                        result.similarity,
                        served_by,
                        lookup_s,
                        tokens_in,
                        tokens_out,
                        wrong_hit,
                    )
                )
        finally:
            bar.close()
    return ReplayRun(
        prompts=list(prompts),
        events=events,
        model=model,
        decision=type(cache.decision).__name__,
        threshold=cache.config.threshold,
        seconds=time.perf_counter() - started,
        wrong_hits_reported=reported,
    )


def replay(
    prompts: Sequence[Prompt],
    *,
    settings: Settings,
    model: str,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    encoder: Encoder | None = None,
    progress: TextIO | None = None,
    wrong: WrongHitJudge | None = None,
) -> ReplayRun:
    """Send ``prompts`` through a cold cache in order; blocking. With ``wrong``, every semantic
    hit it calls wrong is reported to the cache and the prompt stored, as an app would."""
    if not prompts:
        raise InvalidRequest("the prompts file holds no prompts")
    if output_tokens < 0:
        raise InvalidRequest(f"--output-tokens must be >= 0, got {output_tokens}")
    if encoder is None:
        from ..app import load_encoder

        encoder = load_encoder(settings)
    return asyncio.run(
        _replay(
            prompts,
            settings,
            encoder,
            model=model,
            output_tokens=output_tokens,
            progress=progress,
            wrong=wrong,
        )
    )


def _latency(events: Sequence[ReplayEvent]) -> dict[str, Any]:
    if not events:
        return {"n": 0}
    ms = np.array([e.lookup_s * 1000 for e in events])
    return {
        "n": len(events),
        "median_ms": round(float(np.median(ms)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def _usd(value: Decimal | None) -> float | None:
    return None if value is None else round(float(value), 6)


def build_replay_report(
    run: ReplayRun,
    pricing: PricingTable,
    *,
    dataset: dict[str, Any] | None = None,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> dict[str, Any]:
    """The JSON report: hits by layer, money saved, lookup latency, and every semantic hit."""
    measured = [e for e in run.events if e.status != SKIPPED]
    by_status = {s: [e for e in measured if e.status == s] for s in (HIT_EXACT, HIT_SEMANTIC, MISS)}
    n = len(measured)
    hits = by_status[HIT_EXACT] + by_status[HIT_SEMANTIC]

    def cost(events: Sequence[ReplayEvent]) -> Decimal | None:
        if pricing.price(run.model) is None:
            return None
        return sum(
            (
                pricing.estimate(run.model, e.input_tokens, e.output_tokens).usd or Decimal(0)
                for e in events
            ),
            Decimal(0),
        )

    total, saved = cost(measured), cost([e for e in hits if not e.reported_wrong])
    report: dict[str, Any] = {
        "dataset": {
            **(dataset or {}),
            "n_prompts": len(run.prompts),
            "n_skipped": len(run.events) - n,
        },
        "decision": {"name": run.decision, "threshold": run.threshold},
        "model": run.model,
        "hits": {
            "rate": len(hits) / n if n else None,
            "exact": len(by_status[HIT_EXACT]),
            "semantic": len(by_status[HIT_SEMANTIC]),
            "miss": len(by_status[MISS]),
            "exact_rate": len(by_status[HIT_EXACT]) / n if n else None,
            "semantic_rate": len(by_status[HIT_SEMANTIC]) / n if n else None,
            "wrong_hits_reported": run.wrong_hits_reported,
        },
        "money": {
            "priced": total is not None,
            "assumed_output_tokens": output_tokens,
            "without_cache_usd": _usd(total),
            "saved_usd": _usd(saved),
            "saved_share": float(saved / total) if total and saved is not None else None,
            "input_tokens_saved": sum(e.input_tokens for e in hits if not e.reported_wrong),
            "output_tokens_saved": sum(e.output_tokens for e in hits if not e.reported_wrong),
        },
        "lookup_latency": {status: _latency(events) for status, events in by_status.items()},
        "semantic_hits": [
            {
                "id": run.prompts[e.index].id,
                "prompt": run.prompts[e.index].text,
                "served_by_id": run.prompts[e.served_by].id if e.served_by is not None else None,
                "served_by_prompt": (
                    run.prompts[e.served_by].text if e.served_by is not None else None
                ),
                "similarity": round(e.similarity, 4) if e.similarity is not None else None,
            }
            for e in by_status[HIT_SEMANTIC]
        ],
        "runtime": {"seconds": round(run.seconds, 2)},
    }
    return report


def format_replay(report: dict[str, Any], *, show_hits: int = 10) -> str:
    """The report as a few lines of text and the first ``show_hits`` semantic hits."""
    hits, money = report["hits"], report["money"]
    lat = report["lookup_latency"]

    def pct(rate: float | None) -> str:
        return format_rate(rate, 2)

    lines = [
        f"{report['dataset'].get('name', 'prompts')}: {report['dataset']['n_prompts']} prompts "
        f"({report['dataset']['n_skipped']} skipped), {report['decision']['name']} at "
        f"threshold {report['decision']['threshold']}, priced as {report['model']}",
        f"hit rate {pct(hits['rate'])}: exact {hits['exact']} ({pct(hits['exact_rate'])}), "
        f"semantic {hits['semantic']} ({pct(hits['semantic_rate'])}), miss {hits['miss']}",
    ]
    if money["priced"]:
        lines.append(
            f"money: ${money['saved_usd']:.4f} saved of ${money['without_cache_usd']:.4f} "
            f"without a cache ({pct(money['saved_share'])}; answers assumed "
            f"{money['assumed_output_tokens']} tokens where the file has none)"
        )
    else:
        lines.append(f"money: {report['model']} has no price in the pricing table")
    for status in (HIT_EXACT, HIT_SEMANTIC, MISS):
        s = lat[status]
        if s["n"]:
            lines.append(
                f"lookup latency {status}: median {s['median_ms']} ms, p99 {s['p99_ms']} ms "
                f"(n={s['n']})"
            )
    for hit in report["semantic_hits"][:show_hits]:
        lines.append(
            f"  {hit['similarity']}: {hit['prompt'][:70]!r} <- {hit['served_by_prompt'][:70]!r}"
        )
    return "\n".join(lines)
