"""The side-by-side workload of ../shared/tools/README.md, built from the arena prompts.

* stored: the first 2,000 distinct Chatbot Arena prompts of 5 to 300 characters (whitespace
  folded), stored in each cache;
* exact: the stored prompts themselves;
* reworded: each as ``Please tell me: <prompt, first letter lowercased, final punctuation
  removed>?``, which defeats an exact layer and exercises the semantic path;
* new: 1,500 other arena prompts of at most 600 characters (mostly misses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LOOKUP_TEMPLATE", "Workload", "build_workload"]

# loadgen.py's body for a semcache lookup of one query file line (``{q}``).
LOOKUP_TEMPLATE = '{"query": "{q}", "model": "gpt-4o-mini"}'

STORED = 2000
NEW = 1500


@dataclass(frozen=True)
class Workload:
    stored: list[str]
    reworded: list[str]
    new: list[str]

    def store_bodies(self) -> list[dict[str, Any]]:
        """A ``POST /v1/cache/store`` body for each stored prompt (its answer: its first 40
        characters)."""
        return [
            {"query": q, "model": "gpt-4o-mini", "response": {"text": q[:40]}} for q in self.stored
        ]

    def write(self, folder: Path) -> dict[str, Path]:
        """One query per line, for loadgen.py; returns the paths by name."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, lines in (("exact", self.stored), ("reworded", self.reworded), ("new", self.new)):
            path = folder / f"{name}.txt"
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            paths[name] = path
        return paths


def _fold(text: str) -> str:
    return " ".join(text.split())


def reword(prompt: str) -> str:
    body = prompt.rstrip(".?!")
    return f"Please tell me: {body[:1].lower()}{body[1:]}?"


def build_workload(prompts_jsonl: Path, stored: int = STORED, new: int = NEW) -> Workload:
    seen: set[str] = set()
    kept: list[str] = []
    rest: list[str] = []
    with prompts_jsonl.open(encoding="utf-8") as fh:
        for line in fh:
            prompt = _fold(json.loads(line)["prompt"])
            if not prompt or prompt in seen:
                continue
            seen.add(prompt)
            if len(kept) < stored and 5 <= len(prompt) <= 300:
                kept.append(prompt)
            elif len(prompt) <= 600 and len(rest) < new:
                rest.append(prompt)
    return Workload(kept, [reword(p) for p in kept], rest)
