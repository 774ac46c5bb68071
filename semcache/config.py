"""Settings: one table of (name, default, help), read from a TOML file, the environment and flags.

Precedence, lowest first: the defaults below, the ``--config`` TOML file, ``SEMCACHE_<NAME>``
environment variables, command-line flags. ``Settings`` is a frozen value object that callers pass
in; nothing reads the environment after start-up.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "load_settings", "settings_table"]

ENV_PREFIX = "SEMCACHE_"


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """Every knob semcache has. The help text is what ``semcache --help`` and the README show."""

    host: str = _setting("127.0.0.1", "Address the server binds.")
    port: int = _setting(8080, "Port the server listens on.")
    data_dir: str = _setting("index_data", "Folder for the SQLite database and FAISS indexes.")
    database_url: str = _setting(
        "", "SQLAlchemy URL of the store; empty means SQLite at <data_dir>/semcache.db."
    )
    api_keys: str = _setting(
        "",
        "Comma-separated key=tenant[:tier] pairs; empty with no keys file means one open tenant.",
    )
    api_keys_file: str = _setting(
        "", "File of key=tenant[:tier] lines (# comments allowed), added to api_keys."
    )
    insecure: bool = _setting(
        False, "Allow binding a non-loopback address with no API keys configured."
    )
    embedding_model: str = _setting(
        "", "Local sentence-transformers model path; empty means the bundled all-MiniLM-L6-v2."
    )
    embedding_threads: int = _setting(
        1,
        "torch threads for the encoder (per process); 1 keeps lookup latency steady when other "
        "work shares the cores, more helps batch throughput on an idle machine; 0 keeps torch's.",
    )
    hit_decision: str = _setting(
        "verified",
        "How a semantic candidate becomes a hit: verified (cosine floor, then the shipped "
        "cross-encoder verifier) or cosine (the threshold alone).",
    )
    threshold: float | None = _setting(
        None,
        "Cosine similarity in [-1, 1] a candidate needs: with hit_decision=verified the floor "
        "before the verifier (auto: its calibrated floor), with cosine the whole decision "
        "(auto: 0.9).",
    )
    verifier_max_candidates: int = _setting(
        1,
        "Candidates above the threshold the verifier scores per lookup (one batched pass); "
        "1 verifies the nearest neighbour only, more costs about 8 ms each.",
    )
    verifier_score_threshold: float | None = _setting(
        None,
        "Verifier probability in [0, 1] a hit needs (auto: calibrated for a 1% false-hit rate).",
    )
    min_request_threshold: float = _setting(
        0.5, "Lowest threshold a request may ask for; lower values are rejected with 400."
    )
    default_ttl_s: int = _setting(86400, "Seconds an entry lives when the store names no TTL.")
    max_ttl_s: int = _setting(30 * 86400, "Largest TTL a store may ask for, in seconds.")
    max_entries_per_tenant: int = _setting(
        100_000, "Entries a tenant may hold; past it the least recently used are evicted."
    )
    sweep_interval_s: float = _setting(60.0, "Seconds between sweeps that delete expired entries.")
    index_save_interval_s: float = _setting(
        30.0, "Seconds between saves of changed FAISS indexes to <data_dir>/faiss."
    )
    store_write_timeout_s: float = _setting(
        5.0,
        "Seconds a write waits for the database's write lock (held by another process or a "
        "long write) before answering 503 store_busy; reads never wait for it.",
    )
    min_free_disk_mb: float = _setting(
        64.0, "/readyz reports unavailable when the data dir's disk has less free space (MiB)."
    )
    search_k: int = _setting(16, "Nearest neighbours fetched per semantic search.")
    max_body_bytes: int = _setting(5 * 1024 * 1024, "Largest request body accepted, in bytes.")
    max_query_chars: int = _setting(16_384, "Longest query text accepted, in characters.")
    batch_max_size: int = _setting(64, "Most texts embedded in one encoder call.")
    batch_max_wait_ms: float = _setting(
        2.0, "How long a lookup waits for others to share its encoder call, in milliseconds."
    )
    log_level: str = _setting("info", "Log level: debug, info, warning or error.")
    levers_file: str = _setting(
        "",
        "TOML file of tiers, rate limits, model TPM budgets, spend budgets, routing, prompt-cache "
        "annotation and anomaly settings (see the README); empty means the defaults.",
    )
    pricing_file: str = _setting(
        "", "TOML or JSON file of model prices laid over the shipped pricing table."
    )
    openai_base_url: str = _setting(
        "https://api.openai.com/v1", "OpenAI-compatible upstream base URL, ending in /v1."
    )
    openai_api_key: str = _setting("", "API key semcache sends to the OpenAI upstream.")
    openai_read_timeout_s: float = _setting(
        0.0, "Read timeout for the OpenAI upstream in seconds; 0 uses upstream_read_timeout_s."
    )
    anthropic_base_url: str = _setting(
        "https://api.anthropic.com", "Anthropic upstream base URL, without /v1."
    )
    anthropic_api_key: str = _setting("", "API key semcache sends to the Anthropic upstream.")
    anthropic_read_timeout_s: float = _setting(
        0.0, "Read timeout for the Anthropic upstream in seconds; 0 uses upstream_read_timeout_s."
    )
    forward_client_key: bool = _setting(
        False,
        "Send the client's own provider key upstream (X-Upstream-Api-Key, or the client's "
        "key when no semcache keys are configured).",
    )
    upstream_forward_headers: str = _setting(
        "",
        "Comma-separated client headers passed upstream as they are (a trailing * matches a "
        "prefix), for gateway headers; anthropic-version and anthropic-beta always pass.",
    )
    upstream_connect_timeout_s: float = _setting(5.0, "Seconds to connect to an upstream.")
    upstream_read_timeout_s: float = _setting(
        120.0, "Seconds an upstream may stay silent before the call times out."
    )
    upstream_max_retries: int = _setting(
        2, "Retries of an upstream call on 429, 5xx, 529 or timeout, before any byte is sent."
    )
    upstream_backoff_base_s: float = _setting(
        0.5, "Base of the exponential backoff (full jitter) between upstream retries."
    )
    upstream_backoff_max_s: float = _setting(8.0, "Longest backoff between upstream retries.")
    retry_after_max_s: float = _setting(
        30.0, "Longest upstream Retry-After semcache waits; longer ones fail the call at once."
    )
    cache_max_temperature: float = _setting(
        1.0, "Requests with a higher temperature bypass the cache (no lookup, no store)."
    )
    stale_if_error_s: float = _setting(
        0.0,
        "Serve an entry expired at most this many seconds ago when the upstream fails; 0 is off.",
    )

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL actually used."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'semcache.db'}"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (validated)."""
        return load_settings(overrides=changes, base=self, environ={})


def settings_table() -> list[tuple[str, Any, str]]:
    """(name, default, help) for every setting, in declaration order."""
    return [(f.name, f.default, f.metadata["help"]) for f in dataclasses.fields(Settings)]


def _convert(name: str, kind: type, raw: Any, source: str) -> Any:
    if isinstance(raw, str):
        text = raw.strip()
        try:
            if kind is bool:
                lowered = text.lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(text)
            if kind is int:
                return int(text)
            if kind is float:
                return float(text)
        except ValueError:
            raise ConfigError(f"{source}: {name} must be a {kind.__name__}, got {raw!r}") from None
        return raw
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if not isinstance(raw, kind) or (kind is int and isinstance(raw, bool)):
        raise ConfigError(f"{source}: {name} must be a {kind.__name__}, got {raw!r}")
    return raw


def _validate(s: Settings) -> None:
    checks = [
        (1 <= s.port <= 65535 or s.port == 0, "port must be between 1 and 65535"),
        (
            s.threshold is None or -1.0 <= s.threshold <= 1.0,
            "threshold must be a cosine similarity in [-1, 1]",
        ),
        (s.hit_decision in ("verified", "cosine"), "hit_decision must be verified or cosine"),
        (s.verifier_max_candidates >= 1, "verifier_max_candidates must be at least 1"),
        (
            s.verifier_score_threshold is None or 0.0 <= s.verifier_score_threshold <= 1.0,
            "verifier_score_threshold must be in [0, 1]",
        ),
        (-1.0 <= s.min_request_threshold <= 1.0, "min_request_threshold must be in [-1, 1]"),
        (s.default_ttl_s > 0, "default_ttl_s must be positive"),
        (s.max_ttl_s >= s.default_ttl_s, "max_ttl_s must be at least default_ttl_s"),
        (s.max_entries_per_tenant > 0, "max_entries_per_tenant must be positive"),
        (s.sweep_interval_s > 0, "sweep_interval_s must be positive"),
        (s.index_save_interval_s > 0, "index_save_interval_s must be positive"),
        (s.search_k > 0, "search_k must be positive"),
        (s.store_write_timeout_s > 0, "store_write_timeout_s must be positive"),
        (s.min_free_disk_mb >= 0, "min_free_disk_mb must not be negative"),
        (s.max_body_bytes > 0, "max_body_bytes must be positive"),
        (s.max_query_chars > 0, "max_query_chars must be positive"),
        (s.batch_max_size > 0, "batch_max_size must be positive"),
        (s.embedding_threads >= 0, "embedding_threads must not be negative"),
        (s.batch_max_wait_ms >= 0, "batch_max_wait_ms must not be negative"),
        (s.upstream_connect_timeout_s > 0, "upstream_connect_timeout_s must be positive"),
        (s.upstream_read_timeout_s > 0, "upstream_read_timeout_s must be positive"),
        (s.upstream_max_retries >= 0, "upstream_max_retries must not be negative"),
        (s.upstream_backoff_base_s >= 0, "upstream_backoff_base_s must not be negative"),
        (s.upstream_backoff_max_s >= 0, "upstream_backoff_max_s must not be negative"),
        (s.retry_after_max_s >= 0, "retry_after_max_s must not be negative"),
        (s.stale_if_error_s >= 0, "stale_if_error_s must not be negative"),
        (s.openai_read_timeout_s >= 0, "openai_read_timeout_s must not be negative"),
        (s.anthropic_read_timeout_s >= 0, "anthropic_read_timeout_s must not be negative"),
        (
            s.log_level in ("debug", "info", "warning", "error"),
            "log_level must be debug, info, warning or error",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def load_settings(
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Settings | None = None,
) -> Settings:
    """Build validated ``Settings`` from a TOML file, environment variables and overrides."""
    kinds = {f.name: f.type for f in dataclasses.fields(Settings)}
    types = {"str": str, "int": int, "float": float, "bool": bool, "float | None": float}
    values: dict[str, Any] = dataclasses.asdict(base) if base else {}

    def apply(items: Mapping[str, Any], source: str) -> None:
        for name, raw in items.items():
            if name not in kinds:
                raise ConfigError(f"{source}: unknown setting {name!r}; see `semcache --help`")
            optional = str(kinds[name]).endswith("| None")
            if optional and (raw is None or (isinstance(raw, str) and raw.strip() in ("", "auto"))):
                values[name] = None  # "auto": the value comes from elsewhere (see the help)
                continue
            values[name] = _convert(name, types[str(kinds[name])], raw, source)

    if config_file:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        apply(data, str(path))
    env = os.environ if environ is None else environ
    apply(
        {
            key[len(ENV_PREFIX) :].lower(): value
            for key, value in env.items()
            if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in kinds
        },
        "environment",
    )
    if overrides:
        apply({k: v for k, v in overrides.items() if v is not None}, "option")
    settings = Settings(**values)
    _validate(settings)
    return settings
