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
    sim = commands.add_parser("simulate-upstream", help="run the upstream LLM simulator")
    from .simulator import add_simulator_arguments

    add_simulator_arguments(sim)
    # Further commands register themselves with set_defaults(handler=...): the handler takes
    # the parsed arguments and returns the exit status.
    for register in _command_modules():
        register(commands)
    return parser


def _command_modules() -> list[Callable[[Any], None]]:
    """The ``register(subparsers)`` functions of the packages that add commands."""
    from .bench.cli import register as bench
    from .db_command import register as db
    from .usage_report import register as report

    return [bench, report, db]


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
    """Check everything that can fail cheaply, load the model, then run uvicorn."""
    import uvicorn

    from .api.auth import KeyRing, is_loopback
    from .api.http_protocol import JsonErrorH11Protocol
    from .app import build_services, create_app

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    keyring = KeyRing.from_settings(settings.api_keys, settings.api_keys_file)
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
    services = build_services(settings)
    app = create_app(services)
    config = uvicorn.Config(
        app, log_level=settings.log_level, access_log=False, http=JsonErrorH11Protocol
    )
    server = uvicorn.Server(config)
    log.info("semcache listening on http://%s:%d", settings.host, sock.getsockname()[1])
    server.run(sockets=[sock])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            settings = load_settings(
                config_file=args.config,
                environ=os.environ,
                overrides={
                    "host": args.host,
                    "port": args.port,
                    "data_dir": args.data_dir,
                    "insecure": args.insecure,
                },
            )
            return serve(settings)
        if args.command == "simulate-upstream":
            from .simulator import run_simulator

            return run_simulator(args)
        handler = getattr(args, "handler", None)
        if handler is not None:
            return int(handler(args))
        parser.print_help()
        return 2
    except SemcacheError as exc:
        print(f"semcache: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
