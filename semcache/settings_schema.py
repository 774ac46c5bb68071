"""The schema that checks every source of ``Settings``: a pydantic model built from the
dataclass's fields, so the two cannot drift apart.

Unknown keys are refused, each value must have its setting's type (strings, the environment's
only type, are parsed: booleans from true/false, yes/no, on/off, 1/0), numbers must be finite
and within their setting's bounds, and an optional setting takes "auto" or empty for None.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any, get_type_hints

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import ConfigError

__all__ = ["SettingsSchema"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})  # "": an empty variable is unset, false


def _from_text(kind: type) -> Any:
    """Before the strict check: a string (the environment's only type) parsed as ``kind``."""

    def parse(value: Any) -> Any:
        if not isinstance(value, str) or kind is str:
            return value
        text = value.strip()
        if kind is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError("not a boolean")
        return kind(text)  # int() or float(); ValueError when it is not one

    return BeforeValidator(parse)


def _auto(value: Any) -> Any:
    # An optional setting left to "auto" (or empty) takes its value from elsewhere; see the help.
    return (
        None
        if value is None or (isinstance(value, str) and value.strip() in ("", "auto"))
        else value
    )


def _one_of(name: str, choices: tuple[str, ...]) -> Any:
    def check(value: str) -> str:
        if value not in choices:
            listed = ", ".join(choices[:-1]) + " or " + choices[-1]
            raise PydanticCustomError("setting_rule", f"{name} must be {listed}")
        return value

    return AfterValidator(check)


# Bounds per setting, and what the error says when a value is outside them.
_Rule = tuple[dict[str, Any], str]  # Field() bounds, and the error when outside them
_POSITIVE: _Rule = ({"gt": 0}, "must be positive")
_NOT_NEGATIVE: _Rule = ({"ge": 0}, "must not be negative")
_BOUNDS: dict[str, _Rule] = {
    "port": ({"ge": 0, "le": 65535}, "must be between 1 and 65535 (or 0 for any free port)"),
    "threshold": ({"ge": -1, "le": 1}, "must be a cosine similarity in [-1, 1]"),
    "verifier_max_candidates": ({"ge": 1}, "must be at least 1"),
    "verifier_score_threshold": ({"ge": 0, "le": 1}, "must be in [0, 1]"),
    "min_request_threshold": ({"ge": -1, "le": 1}, "must be in [-1, 1]"),
    "hnsw_ef_search": ({"ge": 1, "le": 1000}, "must be between 1 and 1000"),
    "approximate_index_min_entries": ({"ge": 2}, "must be at least 2"),
    "approximate_index_ef_search": ({"ge": 1, "le": 4096}, "must be between 1 and 4096"),
    "approximate_index_nprobe": ({"ge": 1, "le": 65536}, "must be between 1 and 65536"),
    "index_rebuild_deleted_fraction": ({"gt": 0, "lt": 1}, "must be between 0 and 1"),
    **dict.fromkeys(
        (
            "database_pool_size",
            "default_ttl_s",
            "max_entries_per_tenant",
            "sweep_interval_s",
            "index_save_interval_s",
            "search_k",
            "store_write_timeout_s",
            "max_body_bytes",
            "max_query_chars",
            "batch_max_size",
            "upstream_connect_timeout_s",
            "upstream_read_timeout_s",
        ),
        _POSITIVE,
    ),
    **dict.fromkeys(
        (
            "min_free_disk_mb",
            "embedding_threads",
            "batch_max_wait_ms",
            "upstream_max_retries",
            "upstream_backoff_base_s",
            "upstream_backoff_max_s",
            "retry_after_max_s",
            "stale_if_error_s",
            "openai_read_timeout_s",
            "anthropic_read_timeout_s",
            "upstream_probe_interval_s",
        ),
        _NOT_NEGATIVE,
    ),
}
_CHOICES = {
    "hit_decision": ("verified", "cosine"),
    "inference_runtime": ("onnx", "torch"),
    "encoder_precision": ("int8", "fp32"),
    "verifier_precision": ("int8", "fp32"),
    "approximate_index": ("ivf", "hnsw"),
    "log_level": ("debug", "info", "warning", "error"),
    "log_format": ("text", "json"),
}
_BOUND_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def _annotation(name: str, hint: Any) -> Any:
    """The schema type of one setting: its dataclass type, strict, with its bounds."""
    optional = hint == (float | None)
    kind: type = float if optional else hint
    parts: list[Any] = [_from_text(kind), Strict()]
    if kind is float:
        parts.append(AllowInfNan(False))
    if name in _BOUNDS:
        parts.append(Field(**_BOUNDS[name][0]))
    if name in _CHOICES:
        parts.append(_one_of(name, _CHOICES[name]))
    annotation: Any = Annotated[kind, *parts]
    return Annotated[annotation | None, BeforeValidator(_auto)] if optional else annotation


class _SettingsBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _ttl_order(self, info: ValidationInfo) -> _SettingsBase:
        # Checked once, on the result of every source: one source may raise default_ttl_s and
        # a later one max_ttl_s.
        final = bool(info.context and info.context.get("final"))
        ttl = self.model_dump(include={"default_ttl_s", "max_ttl_s"})
        if final and ttl["max_ttl_s"] < ttl["default_ttl_s"]:
            raise PydanticCustomError("setting_rule", "max_ttl_s must be at least default_ttl_s")
        return self


class SettingsSchema:
    """Checks settings values against the fields of a settings dataclass."""

    def __init__(self, settings_type: type) -> None:
        self._kinds = get_type_hints(settings_type)
        fields: dict[str, Any] = {
            f.name: (_annotation(f.name, self._kinds[f.name]), f.default)
            for f in dataclasses.fields(settings_type)
        }
        self._model: type[BaseModel] = create_model(
            "SettingsSchema", __base__=_SettingsBase, **fields
        )

    def check(
        self, values: Mapping[str, Any], given: Mapping[str, Any], source: str | None
    ) -> dict[str, Any]:
        """``values`` through the schema; errors name ``source`` and each setting of ``given``.
        ``source`` None checks a final result, with the rules between settings."""
        try:
            checked = self._model.model_validate(dict(values), context={"final": source is None})
        except ValidationError as exc:
            problems = "; ".join(self._problem(e, given) for e in exc.errors())
            raise ConfigError(f"{source}: {problems}" if source else problems) from None
        return checked.model_dump()

    def _problem(self, error: Any, given: Mapping[str, Any]) -> str:
        if not error["loc"]:
            return str(error["msg"])
        name = str(error["loc"][0])
        raw = given.get(name, error["input"])
        if error["type"] == "extra_forbidden":
            return f"unknown setting {name!r}; see `semcache --help`"
        if error["type"] == "setting_rule":
            return str(error["msg"])
        if error["type"] in _BOUND_ERRORS:
            return f"{name} {_BOUNDS[name][1]}"
        if error["type"] == "finite_number":
            return f"{name} must be a finite number, got {raw!r}"
        hint = self._kinds[name]
        kind = "float (or auto)" if hint == (float | None) else hint.__name__
        if hint is bool:
            kind += " (true/false, yes/no, on/off, 1/0)"
        return f"{name} must be a {kind}, got {raw!r}"
