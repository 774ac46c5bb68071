"""A verified hit decision: cosine prefilter, then a cross-encoder check of the best candidates.

Cosine similarity alone cannot tell "How many US dollars is 100 euros?" from "How many euros is
100 US dollars?" (cosine above 0.95) while it rejects real rewordings at 0.8. ``VerifiedDecision``
adds a second stage after the nearest-neighbour search:

1. **Cosine floor.** A candidate is considered only when ``similarity >= threshold``, the
   request's (or the configured) cosine threshold: the similarity contract that nothing hits
   below the threshold holds (docs/ARCHITECTURE.md). With the verifier on, the threshold is a
   recall floor, not the decision; the shipped default is the floor calibrated with the
   verifier (``cosine_floor`` in the artifact's metadata). A request that asks for a higher
   threshold gets a stricter check.
2. **Verifier.** The ``max_candidates`` most similar candidates above the floor are checked by
   a cross-encoder over (cached query, new query), most similar first: the first pass scores
   each lookup's most similar candidate, and only a lookup whose first candidate is rejected
   has its other candidates scored, in a second pass (``cascade``: a reworded question's
   source is nearly always its most similar entry, so a hit usually costs one pair; choosing
   among 4 candidates costs what 1 does, ``benchmarks/results/verifier_latency.md``). The
   cross-encoder is a MiniLM trained
   on the QQP training split (the pairs of GPTCache's QQP file that are not in the MeanCache
   test set) plus generated near-copy negatives and surface-change
   positives (``training/train_verifier.py``). Its logit and the cosine go through a logistic
   regression (a candidate equal to the query up to case, punctuation and spacing, or
   different from it only by misspelt words, ``semcache.cache.typos``, scores 1);
   a candidate hits when that probability is at least ``score_threshold``,
   calibrated on held-out data for a false-hit rate of 1%. The candidate with the highest
   probability among those scored is served: the most similar one when it passes the first
   pass, else the most probable of the others.
3. **Long prompts.** The cross-encoder reads at most ``max_length`` tokens of a pair; two long
   prompts built from one template ("make flash cards ... topic: X") differ only past that
   point, and the truncated verifier passed 6 of 7 such pairs in the arena replay although
   the answers differ (``benchmarks/data/replay_audit.jsonl``). A pair that does not fit is
   shown to the model without the words both share at the start and at the end
   (``focus_on_difference``), so the model reads what differs, with a little context.

The model loads in the constructor and runs on the CPU, on ONNX Runtime (``runtime="onnx"``,
the default: the pair model exported once from the shipped weights and cached in
``models_dir``, ``semcache.embed.runtime``; torch is imported only to export) or on torch
(``runtime="torch"``, the fallback). Both read the pairs tokenised the same way (the bundled
model's ``tokenizer.json``) and give the same probabilities (within 1e-5 on the test pairs).
On onnx ``precision="int8"`` runs the artifact trained for int8 (``semcache/data/verifier-int8``:
the fp32 model fine-tuned through int8's rounding, ``training/_int8_verifier.py``, and
calibrated on the int8 graph's logits) with every projection quantised (``_INT8_ALL_RECIPE``):
the service's default (the ``verifier_precision`` setting); this class's own default stays
the fp32 model it was trained from. An artifact trained for fp32 run at int8 gets a partly
quantised export (``_INT8_RECIPE``), which moves a logit by about 0.15 on average and keeps
the fp32 calibration.
``choose`` and ``choose_many`` are thread-safe; ``choose_many`` scores the pairs of several
lookups in one pass (on onnx one call per pair, ``threads`` at a time; on torch one batch;
the cache service's verifier micro-batcher calls it). The
artifact (``semcache/data/verifier/``) holds the pair model without its word embeddings, which
come from the bundled all-MiniLM-L6-v2 package.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..embed.encoder import PRECISIONS, bundled_model_path
from ..embed.quantize import int8_export
from ..embed.runtime import (
    RUNTIMES,
    OnnxModel,
    default_threads,
    export_module,
    length_groups,
    load_onnx,
    model_files,
    padded_feeds,
    source_digest,
)
from ..errors import ConfigError
from ..store.base import Candidate
from .keys import normalize_query
from .pair_text import fit_to_window, focus_on_difference, same_question

__all__ = [
    "VerificationRequest",
    "VerifiedDecision",
    "VerifierMeta",
    "default_artifact_dir",
    "fit_to_window",
    "focus_on_difference",
    "normalize_query",
    "same_question",
]


def default_artifact_dir(precision: str = "fp32") -> Path:
    """Where the shipped artifact for ``precision`` lives: ``semcache/data/verifier`` (fp32),
    ``semcache/data/verifier-int8`` (int8: trained through int8's rounding, calibrated on the
    int8 graph's logits) when that is shipped, else the fp32 one."""
    data = Path(__file__).resolve().parent.parent / "data"
    if precision == "int8" and (data / "verifier-int8" / "verifier.json").is_file():
        return data / "verifier-int8"
    return data / "verifier"


# One lookup's question to the verifier: (query, candidates, cosine threshold).
VerificationRequest = tuple[str, Sequence[Candidate], float]
# Bump when the exported graph changes for the same weights (a new export replaces old files).
_RECIPE = "semcache-verifier-onnx-3"  # 2: eager attention, fused graph; 3: slow fusions split
# int8: the attention's QKV projections, the feed-forward input projections and the head. The
# feed-forward output projection (which reads the GELU output) moved the logit most when
# quantised, so it stays fp32, with attention's output projection; the quantiser's defaults
# would also take the word-embedding table (benchmarks/results/verifier_int8_layers.md).
_INT8_RECIPE = "+int8-qkv-ffn_in-1"
# An artifact trained for int8 (its metadata's ``precision``) runs every projection in int8:
# the rounding it was trained through (training/_int8_verifier.py).
_INT8_ALL_RECIPE = "+int8-all-1"
_INT8_OPS = ("MatMul", "Attention")


def _int8_keeps_fp32(node: str) -> bool:
    return node.endswith("/output/dense/MatMul")


def _export_verifier(artifact: Path, model_path: Path | None, fused: bool = True) -> Any:
    """A function that exports the pair model to a path (``fused`` as ``_export_encoder``)."""

    def export(target: Path) -> None:
        from .verifier_model import load_pair_model

        model, _ = load_pair_model(artifact, model_path)
        names = ("input_ids", "attention_mask", "token_type_ids")
        export_module(model, target, names, "logit", (0,), model.encoder if fused else None)

    return export


@dataclass(frozen=True)
class VerifierMeta:
    """What ``verifier.json`` says about the shipped model and its calibration."""

    artifact: str
    coef_logit: float
    coef_cosine: float
    intercept: float
    cosine_floor: float
    score_threshold: float
    max_length: int
    precision: str = "fp32"  # what the weights were trained and calibrated for

    @classmethod
    def read(cls, path: Path) -> VerifierMeta:
        try:
            raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            coef = raw["stack"]["coef"]
            return cls(
                artifact=str(raw["artifact"]),
                coef_logit=float(coef[0]),
                coef_cosine=float(coef[1]),
                intercept=float(raw["stack"]["intercept"]),
                cosine_floor=float(raw["cosine_floor"]),
                score_threshold=float(raw["score_threshold"]),
                max_length=int(raw.get("max_length", 128)),
                precision=str(raw.get("precision", "fp32")),
            )
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise ConfigError(f"cannot read verifier metadata {path}: {exc}") from exc


class VerifiedDecision:
    """Cosine floor (``threshold``) plus the shipped cross-encoder verifier; see the module doc.

    ``score_threshold`` overrides the calibrated probability threshold (0..1, higher is
    stricter); ``max_candidates`` bounds how many candidates one lookup verifies; ``cascade``
    scores the most similar one first and the others only when it is rejected (False: all of
    them in one pass, the best served). ``runtime`` (``onnx`` or ``torch``), ``models_dir`` and
    ``threads`` as for ``semcache.embed.Encoder``.
    """

    def __init__(
        self,
        artifact_dir: str | os.PathLike[str] | None = None,
        *,
        max_candidates: int = 4,
        score_threshold: float | None = None,
        model_path: str | os.PathLike[str] | None = None,
        runtime: str = "onnx",
        models_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        cascade: bool = True,
        precision: str = "fp32",
    ) -> None:
        if runtime not in RUNTIMES:
            raise ConfigError(f"inference runtime must be one of {RUNTIMES}, got {runtime!r}")
        if precision not in PRECISIONS:
            raise ConfigError(f"verifier precision must be one of {PRECISIONS}, got {precision!r}")
        self.runtime = runtime
        self.precision = precision if runtime == "onnx" else "fp32"
        folder = Path(artifact_dir) if artifact_dir else default_artifact_dir(self.precision)
        self.cascade = cascade
        self.meta = VerifierMeta.read(folder / "verifier.json")
        if max_candidates < 1:
            raise ConfigError("max_candidates must be at least 1")
        self.max_candidates = max_candidates
        self.score_threshold = (
            self.meta.score_threshold if score_threshold is None else float(score_threshold)
        )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        artifact = folder / self.meta.artifact
        if not artifact.is_file():
            raise ConfigError(f"verifier artifact {artifact} is missing")
        base = Path(model_path) if model_path else bundled_model_path()
        self._tokenizer = self._pair_tokenizer(base)
        self._pad_id = 0
        self._lock = threading.Lock()
        self._onnx: OnnxModel | None = None
        self._model: Any = None
        # On onnx each pair is scored in a call of its own, ``threads`` calls at a time (a
        # lone pair's call has the session's threads to itself): on 2 cores two calls side by
        # side score more pairs a second than one batched call (benchmarks/results/
        # verifier_pairwise.md), and int8 needs it: its activations are quantised with one
        # scale per call, so in a batch a pair's logit would move with its batch-mates.
        self._pairwise: ThreadPoolExecutor | None = None
        if runtime == "onnx":
            from ..embed.runtime import default_models_dir

            export = _export_verifier(artifact, Path(model_path) if model_path else None)
            recipe, name = _RECIPE, "verifier"
            if self.precision == "int8" and self.meta.precision == "int8":
                export = int8_export(export, op_types=_INT8_OPS)
                recipe, name = _RECIPE + _INT8_ALL_RECIPE, "verifier_int8"
            elif self.precision == "int8":
                export = int8_export(export, op_types=_INT8_OPS, keep_fp32=_int8_keeps_fp32)
                recipe, name = _RECIPE + _INT8_RECIPE, "verifier_int8"
            digest = source_digest(recipe, [("verifier", artifact), *model_files(base)])
            workers = threads or default_threads(runtime)
            self._onnx = load_onnx(
                Path(models_dir) if models_dir else default_models_dir(),
                name,
                digest,
                export,
                workers,
            )
            self._pairwise = ThreadPoolExecutor(workers, thread_name_prefix="semcache-verifier")
        else:
            from .verifier_model import load_pair_model

            try:
                self._model, _ = load_pair_model(artifact, Path(model_path) if model_path else None)
            except (OSError, ValueError, RuntimeError) as exc:
                raise ConfigError(f"cannot load the verifier from {artifact}: {exc}") from exc
        # Whole words of the WordPiece vocabulary, for telling a misspelling from a real word.
        self._vocabulary = frozenset(self._tokenizer.get_vocab())

    def _pair_tokenizer(self, base: Path) -> Any:
        """The base model's fast tokenizer, set up as ``verifier_model.encode_pairs`` calls
        transformers' (``[CLS] a [SEP] b [SEP]``, longest-first truncation at the window);
        padding is per length group (``logits``)."""
        from tokenizers import Tokenizer

        path = base / "tokenizer.json"
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own Exception for a bad file
            raise ConfigError(f"cannot read the verifier's tokenizer {path}: {exc}") from exc
        padding = tokenizer.padding
        self._pad_id = int(padding["pad_id"]) if padding else 0
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.meta.max_length, strategy="longest_first")
        return tokenizer

    @property
    def cosine_floor(self) -> float:
        """The cosine threshold the verifier was calibrated with (the shipped default)."""
        return self.meta.cosine_floor

    def logits(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Raw cross-encoder logits for (cached query, new query) pairs: on onnx one call per
        pair, ``threads`` at a time; on torch one forward pass per group of similar lengths
        (``semcache.embed.runtime.length_groups``)."""
        if not pairs:
            return []
        fitted = [fit_to_window(self._tokenizer, a, b, self.meta.max_length) for a, b in pairs]
        encodings = self._tokenizer.encode_batch(fitted)
        if self._pairwise is not None and self._onnx is not None:
            run, pad = self._onnx.run, self._pad_id
            one = [padded_feeds([e], pad) for e in encodings]
            if len(one) == 1:  # no thread hop for a lone pair
                return [float(run(one[0]).reshape(-1)[0])]
            return [float(v.reshape(-1)[0]) for v in self._pairwise.map(run, one)]
        out = [0.0] * len(pairs)
        for group in length_groups([len(e.ids) for e in encodings]):
            feeds = padded_feeds([encodings[i] for i in group], self._pad_id)
            for i, value in zip(group, self._forward(feeds), strict=True):
                out[i] = float(value)
        return out

    def _forward(self, feeds: dict[str, Any]) -> list[float]:
        if self._onnx is not None:
            return [float(v) for v in self._onnx.run(feeds).reshape(-1)]
        import torch

        batch = {k: torch.from_numpy(v) for k, v in feeds.items()}
        with self._lock, torch.inference_mode():
            out = self._model(**batch)
        return [float(v) for v in out.float().reshape(-1).tolist()]

    def probability(self, logit: float, cosine: float) -> float:
        """The calibrated hit probability from a cross-encoder logit and a cosine."""
        z = self.meta.coef_logit * logit + self.meta.coef_cosine * cosine + self.meta.intercept
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def scores(self, query: str, candidates: Sequence[Candidate]) -> list[float]:
        """Hit probabilities of ``candidates`` for ``query``, in order.

        A candidate that asks the same as the query (``same_question``: equal after
        ``normalize_query``, or different only by misspelt words) scores 1.0 without the model;
        the others go through one batched forward pass.
        """
        return self._scores_many([(query, candidates)])[0]

    def _scores_many(self, asked: Sequence[tuple[str, Sequence[Candidate]]]) -> list[list[float]]:
        """``scores`` of several (query, candidates), every model pair in one batch."""
        same = [
            [same_question(c.entry.query, query, self._vocabulary) for c in candidates]
            for query, candidates in asked
        ]
        pairs = [
            (c.entry.query, query)
            for (query, candidates), flags in zip(asked, same, strict=True)
            for c, s in zip(candidates, flags, strict=True)
            if not s
        ]
        logits = iter(self.logits(pairs))
        return [
            [
                1.0 if s else self.probability(next(logits), c.similarity)
                for c, s in zip(candidates, flags, strict=True)
            ]
            for (_, candidates), flags in zip(asked, same, strict=True)
        ]

    def _eligible(self, candidates: Sequence[Candidate], threshold: float) -> list[Candidate]:
        return sorted(
            (c for c in candidates if c.similarity >= threshold),
            key=lambda c: c.similarity,
            reverse=True,
        )[: self.max_candidates]

    def scored(
        self, query: str, candidates: Sequence[Candidate], threshold: float
    ) -> list[tuple[float, Candidate]]:
        """(hit probability, candidate) for the ``max_candidates`` most similar candidates at
        or above ``threshold``; empty when none is."""
        return self.scored_many([(query, candidates, threshold)])[0]

    def scored_many(
        self, requests: Sequence[VerificationRequest]
    ) -> list[list[tuple[float, Candidate]]]:
        """``scored`` for several lookups; the model reads their pairs in one batch per pass
        (the first candidates, then the others of the lookups whose first was rejected)."""
        eligible = [self._eligible(candidates, threshold) for _, candidates, threshold in requests]
        queries = [query for query, _, _ in requests]
        if not self.cascade:
            return self._scored_lists(queries, eligible)
        scored = self._scored_lists(queries, [e[:1] for e in eligible])
        # The second pass: every candidate but the first, of the lookups whose first failed.
        again = [
            i
            for i, (e, first) in enumerate(zip(eligible, scored, strict=True))
            if len(e) > 1 and first[0][0] < self.score_threshold
        ]
        more = self._scored_lists([queries[i] for i in again], [eligible[i][1:] for i in again])
        for i, extra in zip(again, more, strict=True):
            scored[i] = scored[i] + extra
        return scored

    def _scored_lists(
        self, queries: Sequence[str], eligible: Sequence[list[Candidate]]
    ) -> list[list[tuple[float, Candidate]]]:
        """(probability, candidate) for every candidate in ``eligible[i]`` of ``queries[i]``,
        every model pair of them all in one batch."""
        asked = [(query, e) for query, e in zip(queries, eligible, strict=True) if e]
        scores = iter(self._scores_many(asked))
        return [list(zip(next(scores), e, strict=True)) if e else [] for e in eligible]

    def accept(self, scored: Sequence[tuple[float, Candidate]]) -> Candidate | None:
        """The most probable of ``scored`` when it reaches ``score_threshold``, else None."""
        if not scored:
            return None
        best_score, best = max(scored, key=lambda sc: sc[0])
        return best if best_score >= self.score_threshold else None

    def choose(
        self, query: str, candidates: Sequence[Candidate], threshold: float
    ) -> Candidate | None:
        return self.accept(self.scored(query, candidates, threshold))

    def choose_many(self, requests: Sequence[VerificationRequest]) -> list[Candidate | None]:
        """``choose`` for several lookups at once, their pairs scored in one pass."""
        return [self.accept(scored) for scored in self.scored_many(requests)]
