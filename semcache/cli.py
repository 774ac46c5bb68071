"""The command line: a thin layer that builds settings and hands them to the server."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import ENV_PREFIX, Settings, load_settings, settings_table
from .errors import SemcacheError
from .netbind import listen_socket
from .requestlog import configure_logging

__all__ = ["main"]

log = logging.getLogger("semcache")


def _settings_epilog() -> str:
    lines = ["settings (TOML file keys; environment variables SEMCACHE_<NAME>):"]
    for name, default, help_text in settings_table():
        lines.append(f"  {name} (default {default!r}, env {ENV_PREFIX}{name.upper()})")
        lines.append(f"      {help_text}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semcache",
        description="A semantic cache and cost-control tier for LLM traffic.",
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the cache server",
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _serve_arguments(serve)
    sim = commands.add_parser("simulate-upstream", help="run the upstream LLM simulator")
    from .simulator import add_simulator_arguments

    add_simulator_arguments(sim)
    # Further commands register themselves with set_defaults(handler=...): the handler takes
    # the parsed arguments and returns the exit status.
    for register in _command_modules():
        register(commands)
    return parser


def _serve_parser() -> argparse.ArgumentParser:
    """``semcache serve`` alone: parsing it imports none of the other commands' modules
    (the simulator's FastAPI, the store's migrations), so a typo fails in a second."""
    parser = argparse.ArgumentParser(prog="semcache serve")
    _serve_arguments(parser)
    parser.set_defaults(command="serve")
    return parser


def _serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--data-dir", dest="data_dir", help="data folder (default index_data)")
    serve.add_argument("--config", help="TOML file of settings")
    serve.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback address with no API keys configured",
    )


def _command_modules() -> list[Callable[[Any], None]]:
    """The ``register(subparsers)`` functions of the packages that add commands."""
    from .bench.cli import register as bench
    from .db_command import register as db
    from .import_command import register as import_file
    from .usage_report import register as report

    return [bench, report, db, import_file]


# Set by ./scripts/serve to the caller's working directory (not a setting).
CALLER_CWD_VARIABLE = "SEMCACHE_CALLER_CWD"
# Settings that name files or folders.
PATH_SETTINGS = (
    "data_dir",
    "api_keys_file",
    "levers_file",
    "pricing_file",
    "models_dir",
    "embedding_model",
)


def _from(base: str | None, path: str | None) -> str | None:
    if base is None or not path or Path(path).is_absolute():
        return path
    return str(Path(base) / path)


def resolve_paths(settings: Settings, base: str | None) -> Settings:
    """``settings`` with relative paths set away from their defaults resolved against
    ``base`` (the caller's folder); unchanged when ``base`` is None."""
    if base is None:
        return settings
    defaults = {name: default for name, default, _ in settings_table()}
    changes = {
        name: _from(base, getattr(settings, name))
        for name in PATH_SETTINGS
        if getattr(settings, name) != defaults[name]
    }
    return settings.replace(**changes) if changes else settings


def _check_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise SemcacheError(
            f"data dir {path} is not writable ({exc.strerror}); pick another with --data-dir"
        ) from exc


def _bind(host: str, port: int) -> socket.socket:
    try:
        return listen_socket(host, port)
    except OSError as exc:
        reason = "is already in use" if exc.errno == 98 else f"cannot be bound ({exc.strerror})"
        raise SemcacheError(f"{host}:{port} {reason}; choose another with --port") from exc


def serve(settings: Settings) -> int:
    """Check everything that can fail cheaply, load the model, then run uvicorn.

    The keys, levers and pricing files are read before the app's modules (torch, the model)
    are even imported, so a typo in any of them fails in about a second."""
    from .api.auth import KeyRing, is_loopback
    from .levers.config import load_levers
    from .levers.pricing import PricingTable

    configure_logging(settings.log_level, settings.log_format)
    # Model loading draws progress bars (tqdm, Hugging Face); they are not log lines.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    keyring = KeyRing.from_settings(settings.api_keys, settings.api_keys_file)
    # build_services reads these again; here they only fail early.
    load_levers(settings.levers_file)
    PricingTable.load(settings.pricing_file or None)
    if keyring.open and not is_loopback(settings.host) and not settings.insecure:
        raise SemcacheError(
            f"refusing to serve {settings.host} with no API keys configured; set "
            "SEMCACHE_API_KEYS, bind 127.0.0.1, or pass --insecure"
        )
    if not settings.resolved_database_url.startswith("postgresql"):
        # PostgreSQL holds everything: a replica needs no local disk.
        _check_data_dir(Path(settings.data_dir))
    sock = _bind(settings.host, settings.port)
    if keyring.open:
        log.warning("no API keys configured: serving one open tenant on %s", settings.host)
    import uvicorn

    from .api.http_protocol import JsonErrorHttpProtocol
    from .app import build_services, create_app

    services = build_services(settings)
    app = create_app(services)
    # The request log replaces uvicorn's access log; log_config=None keeps uvicorn's own
    # lines on the root handler configured above, in the same format.
    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        access_log=False,
        log_config=None,
        # httptools' parser (uvicorn[standard]): h11's parsing and framing were a seventh of an
        # exact hit's CPU time (benchmarks/results/hot_path_profile.md).
        http=JsonErrorHttpProtocol,
    )
    server = uvicorn.Server(config)
    url = f"http://{settings.host}:{sock.getsockname()[1]}"
    message, fields = startup_summary(url, settings, services)
    # JSON logs get the fields; a text line has them all in its message already.
    log.info("%s", message, extra={"fields": fields, "in_message": tuple(fields)})
    server.run(sockets=[sock])
    return 0


def startup_summary(url: str, settings: Settings, services: Any) -> tuple[str, dict[str, Any]]:
    """The one start-up line: where it listens and what it loaded (store, runtime, keys,
    levers, upstreams); as a message and as fields for the JSON log."""
    from sqlalchemy.engine import make_url

    from .app import configured_upstreams

    database = make_url(settings.resolved_database_url)
    backend = "postgresql" if database.drivername.startswith("postgresql") else "sqlite"
    where = (
        database.render_as_string(hide_password=True)
        if backend != "sqlite"
        else (database.database or "")
    )
    keyring = services.keyring
    keys = (
        "open (no API keys)"
        if keyring.open
        else f"{len(keyring)} API keys ({keyring.admins} admin)"
    )
    upstreams = configured_upstreams(settings)
    precision = services.encoder.precision  # fp32 on torch, whatever the setting says
    fields: dict[str, Any] = {
        "url": url,
        "store": backend,
        "database": where,
        "entries": services.store.count_entries(),
        "runtime": settings.inference_runtime,
        "encoder_precision": precision,
        "hit_decision": settings.hit_decision,
        "api_keys": len(keyring),
        "admin_keys": keyring.admins,
        "levers": settings.levers_file or "defaults",
        "upstreams": upstreams,
        "probing": services.probe is not None,
    }
    probed = ", ".join(f"{n} {u}" for n, u in upstreams.items()) or "none configured"
    message = (
        f"semcache listening on {url}: store {backend} {where} ({fields['entries']} entries), "
        f"runtime {settings.inference_runtime}, {precision} encoder ({settings.hit_decision} "
        f"hits), {keys}, "
        f"levers {fields['levers']}, upstreams {probed}"
    )
    return message, fields


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["serve"] and not {"-h", "--help"} & set(given):
        args = _serve_parser().parse_args(given[1:])
    else:
        args = build_parser().parse_args(given)
    try:
        if args.command == "serve":
            # ./scripts/serve runs from the repository root and names the folder it was
            # called from: relative paths the caller gave mean paths from there.
            caller = os.environ.get(CALLER_CWD_VARIABLE) or None
            settings = load_settings(
                config_file=_from(caller, args.config),
                environ=os.environ,
                overrides={
                    "host": args.host,
                    "port": args.port,
                    "data_dir": _from(caller, args.data_dir),
                    "insecure": args.insecure,
                },
            )
            return serve(resolve_paths(settings, caller))
        if args.command == "simulate-upstream":
            from .simulator import run_simulator

            return run_simulator(args)
        handler = getattr(args, "handler", None)
        if handler is not None:
            return int(handler(args))
        build_parser().print_help()
        return 2
    except SemcacheError as exc:
        print(f"semcache: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
