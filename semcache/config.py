"""Settings: one table of (name, default, help), read from a TOML file, the environment and flags.

Precedence, lowest first: the defaults below, the ``--config`` TOML file, ``SEMCACHE_<NAME>``
environment variables, command-line flags. ``Settings`` is a frozen value object that callers pass
in; nothing reads the environment after start-up.

Every source is checked by the schema in ``settings_schema``, built from the dataclass's fields.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings_schema import SettingsSchema
from .tomlfile import read_toml

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
        "",
        "SQLAlchemy URL of the store; empty means SQLite at <data_dir>/semcache.db; "
        "postgresql+psycopg://... is the store replicas share (PostgreSQL with pgvector).",
    )
    database_pool_size: int = _setting(
        10,
        "Connections each process keeps open to a PostgreSQL database_url; the server's "
        "max_connections must exceed replicas x this.",
    )
    hnsw_ef_search: int = _setting(
        100,
        "pgvector's hnsw.ef_search on PostgreSQL: candidates a semantic search keeps; higher "
        "finds the nearest entry more often and costs more.",
    )
    approximate_index_min_entries: int = _setting(
        20_000,
        "Entries at which a partition's FAISS index turns from exact search into an approximate "
        "one (back to exact below half of it); a large partition's stores wait while twice this "
        "many vectors wait to join its index (and are searched exactly meanwhile).",
    )
    approximate_index: str = _setting(
        "ivf",
        "The approximate index of large partitions: ivf (FAISS IndexIVFFlat, retrained in the "
        "background as the partition grows 4x) or hnsw (IndexHNSWFlat); a partition saved with "
        "the other kind is rebuilt into this one in the background.",
    )
    approximate_index_nprobe: int = _setting(
        32,
        "IVF lists an ivf search reads: higher finds the nearest entry more often and costs more.",
    )
    approximate_index_ef_search: int = _setting(
        400,
        "FAISS's efSearch in hnsw partitions: candidates an HNSW search keeps; higher finds the "
        "nearest entry more often and costs more.",
    )
    index_rebuild_deleted_fraction: float = _setting(
        0.2,
        "Share of an approximate index's vectors deleted (tombstoned) past which it is rebuilt "
        "from the live ones in the background.",
    )
    api_keys: str = _setting(
        "",
        "Comma-separated key=tenant[:tier[:admin]] pairs (admin: the dashboard shows every "
        "tenant); empty with no keys file means one open tenant.",
    )
    api_keys_file: str = _setting(
        "", "File of key=tenant[:tier[:admin]] lines (# comments allowed), added to api_keys."
    )
    insecure: bool = _setting(
        False, "Allow binding a non-loopback address with no API keys configured."
    )
    embedding_model: str = _setting(
        "", "Local sentence-transformers model path; empty means the bundled all-MiniLM-L6-v2."
    )
    embedding_threads: int = _setting(
        0,
        "Intra-op threads of the encoder and of the verifier (ONNX Runtime's per model, torch's "
        "per process; on onnx also how many verifier pairs are scored at once); 0 means 1 (on "
        "onnx a short query's call is faster on one core than split across two, and the "
        "encoder's and verifier's calls of concurrent lookups use the other core; on torch "
        "threads stall each other when other work shares the cores).",
    )
    inference_runtime: str = _setting(
        "onnx",
        "Runtime of the encoder and the verifier: onnx (ONNX Runtime; the models are exported "
        "from the shipped weights at first start and cached in models_dir) or torch.",
    )
    encoder_precision: str = _setting(
        "int8",
        "Precision of the encoder on onnx: int8 (dynamically quantised from the fp32 export at "
        "first start; about 1.6x faster; the shipped decision is calibrated for it) or fp32 "
        "(vectors that do not move with the other texts of their batch, which int8's do by "
        "about 0.008 in cosine). The torch runtime always runs fp32 (the verifier's precision "
        "is verifier_precision). Vectors already stored stay usable after a switch (cosine "
        "0.99 to the other precision's).",
    )
    verifier_precision: str = _setting(
        "int8",
        "Precision of the verifier on onnx: int8 (the shipped default: a verifier trained "
        "through int8's rounding and calibrated on its own logits, every projection quantised "
        "at first start; about 2x faster a pair than fp32) or fp32 (the model it was trained "
        "from: hard-pairs recall 0.5 to 1.6 points higher, QQP and STS-B within a point; README, "
        "Benchmarks). Each pair is scored in a call of its own either way. The torch runtime "
        "always runs fp32.",
    )
    models_dir: str = _setting(
        "",
        "Folder for the ONNX files exported from the model weights (named by a hash of the "
        "weights); empty means <data_dir>/models.",
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
        "Candidates above the threshold the verifier may score per lookup; 1 verifies the "
        "nearest neighbour only. With more, the nearest is scored first and the others (one "
        "more batched pass, about 8 ms each) only when it is rejected.",
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
    search_k: int = _setting(
        16,
        "Nearest neighbours a semantic search considers; their rows are read only as far as the "
        "hit decision needs (1 on cosine, verifier_max_candidates on verified) past those "
        "filtered out.",
    )
    max_body_bytes: int = _setting(5 * 1024 * 1024, "Largest request body accepted, in bytes.")
    max_query_chars: int = _setting(16_384, "Longest query text accepted, in characters.")
    batch_max_size: int = _setting(64, "Most texts embedded in one encoder call.")
    batch_max_wait_ms: float = _setting(
        2.0,
        "How long a lookup waits for others to share its encoder call, in milliseconds; "
        "skipped while the last call held one lookup, so sequential traffic never waits.",
    )
    log_level: str = _setting("info", "Log level: debug, info, warning or error.")
    log_format: str = _setting(
        "text",
        "Format of every log line on stderr, semcache's and uvicorn's: text or json (one "
        "object per line).",
    )
    log_requests: bool = _setting(
        True, "Log one line per request (the request log); probes and scrapes only at debug."
    )
    log_prompts: bool = _setting(
        False, "Put the prompt's last user message in the request log (off: no prompt text)."
    )
    otel_endpoint: str = _setting(
        "",
        "OTLP/HTTP endpoint traces are sent to (a base URL, /v1/traces is added unless given); "
        "empty means OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, and "
        "no traces when neither is set.",
    )
    otel_service_name: str = _setting(
        "", "service.name of the traces; empty means OTEL_SERVICE_NAME, else semcache."
    )
    upstream_probe_interval_s: float = _setting(
        10.0,
        "Seconds between /readyz's TCP probes of each configured upstream; 0 turns them off.",
    )
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

    @property
    def resolved_models_dir(self) -> Path:
        """The folder the ONNX runtime caches its exports in."""
        return Path(self.models_dir) if self.models_dir else Path(self.data_dir) / "models"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (validated)."""
        return load_settings(overrides=changes, base=self, environ={})


def settings_table() -> list[tuple[str, Any, str]]:
    """(name, default, help) for every setting, in declaration order."""
    return [(f.name, f.default, f.metadata["help"]) for f in dataclasses.fields(Settings)]


@functools.cache
def _schema() -> SettingsSchema:
    # Built at the first load, not at import: the pydantic model costs tens of milliseconds.
    return SettingsSchema(Settings)


def load_settings(
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Settings | None = None,
) -> Settings:
    """Build validated ``Settings`` from a TOML file, environment variables and overrides.

    Each source is checked as it is laid over the ones before it, so an error names the
    source and the setting; rules between settings are checked on the result.
    """
    sources: list[tuple[Mapping[str, Any], str]] = []
    if config_file:
        sources.append((read_toml(config_file, "config file"), str(config_file)))
    env = os.environ if environ is None else environ
    names = {f.name for f in dataclasses.fields(Settings)}
    # Only SEMCACHE_<setting> variables: others with the prefix belong to other tools.
    from_env = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in names
    }
    sources.append((from_env, "environment"))
    if overrides:
        sources.append(({k: v for k, v in overrides.items() if v is not None}, "option"))
    values: dict[str, Any] = dataclasses.asdict(base) if base else {}
    for given, source in sources:
        if given:
            values = _schema().check({**values, **given}, given, source)
    return Settings(**_schema().check(values, {}, None))
