"""The verifier's pair model: a MiniLM cross-encoder scoring (cached query, new query).

Imported lazily (it imports torch and transformers). The architecture is the bundled
all-MiniLM-L6-v2 ``BertModel`` read as a cross-encoder, ``[CLS] a [SEP] b [SEP]``, mean-pooled
over the pair's tokens, then one linear unit: a logit, high when ``a``'s answer also answers
``b``. The shipped artifact (``semcache/data/verifier/verifier.safetensors``) holds every weight
except the word-embedding matrix, in float16; the word embeddings stay frozen during training
and are read from the bundled model package at load time, which keeps the artifact near 21 MB.
An artifact may hold fewer transformer layers than the bundled model's six (a student distilled
from a six-layer verifier, ``training/train_verifier.py --layers``): the model is built with as
many layers as the artifact has.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..embed.encoder import bundled_model_path

__all__ = [
    "WORD_EMBEDDINGS",
    "PairModel",
    "artifact_layers",
    "keep_layers",
    "load_base",
    "load_pair_model",
]

WORD_EMBEDDINGS = "encoder.embeddings.word_embeddings.weight"
MAX_LENGTH = 128
_LAYER = "encoder.encoder.layer."


class PairModel(nn.Module):
    """BERT encoder + mean pooling + a linear head, one logit per pair."""

    def __init__(self, encoder: Any, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(encoder.config.hidden_size), 1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits: torch.Tensor = self.head(self.dropout(pooled)).squeeze(-1)
        return logits


def load_base(model_path: Path | None = None) -> tuple[PairModel, Any]:
    """A ``PairModel`` initialised from the bundled MiniLM (head at zero) and its tokenizer."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = str(model_path or bundled_model_path())
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
    model = PairModel(encoder)
    nn.init.zeros_(model.head.bias)
    nn.init.normal_(model.head.weight, std=0.02)
    return model, tokenizer


def keep_layers(model: PairModel, layers: Sequence[int]) -> PairModel:
    """``model`` with only the transformer layers at ``layers`` (in that order), renumbered
    from 0: a student's starting point taken from a deeper model."""
    blocks = model.encoder.encoder.layer
    model.encoder.encoder.layer = nn.ModuleList([blocks[i] for i in layers])
    model.encoder.config.num_hidden_layers = len(layers)
    return model


def artifact_layers(state: dict[str, Any]) -> int:
    """How many transformer layers an artifact's weights hold."""
    found = {int(k[len(_LAYER) :].split(".", 1)[0]) for k in state if k.startswith(_LAYER)}
    return max(found) + 1 if found else 0


def load_pair_model(artifact: Path, model_path: Path | None = None) -> tuple[PairModel, Any]:
    """The trained pair model: the bundled MiniLM with the artifact's weights laid over it
    (cut to the artifact's number of layers)."""
    from safetensors.torch import load_file

    model, tokenizer = load_base(model_path)
    state = {k: v.float() for k, v in load_file(str(artifact)).items()}
    layers = artifact_layers(state)
    if 0 < layers < len(model.encoder.encoder.layer):
        keep_layers(model, range(layers))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Only the frozen word embeddings (and a buffer some versions keep) may come from the base.
    left = [k for k in missing if k != WORD_EMBEDDINGS and not k.endswith("position_ids")]
    if left or unexpected:
        raise ValueError(
            f"verifier artifact {artifact} does not fit the model: missing {left}, "
            f"unexpected {list(unexpected)}"
        )
    model.eval()
    return model, tokenizer


def encode_pairs(
    tokenizer: Any, a: Sequence[str], b: Sequence[str], max_length: int = MAX_LENGTH
) -> dict[str, torch.Tensor]:
    """Tokenise pairs as ``[CLS] a [SEP] b [SEP]``, longest-first truncation, padded."""
    batch = tokenizer(
        list(a),
        list(b),
        padding=True,
        truncation="longest_first",
        max_length=max_length,
        return_tensors="pt",
    )
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def shippable_state(model: PairModel) -> dict[str, torch.Tensor]:
    """Every weight but the word embeddings, as contiguous float16 tensors."""
    return {
        k: v.detach().to(torch.float16).contiguous()
        for k, v in model.state_dict().items()
        if k != WORD_EMBEDDINGS and not k.endswith("position_ids")
    }
