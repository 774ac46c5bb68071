"""``python -m semcache.simulator`` and ``semcache simulate-upstream``: serve it with uvicorn."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from ..netbind import listen_socket
from .app import create_simulator_app
from .config import SimulatorConfig

__all__ = ["add_simulator_arguments", "config_from_args", "main", "run_simulator"]

_NORMAL = {"", "none", "ok", "null"}


def add_simulator_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags to ``parser`` (also used by the main ``semcache`` CLI)."""
    parser.add_argument("--host", default="127.0.0.1", help="Address to bind (127.0.0.1).")
    parser.add_argument("--port", type=int, default=8090, help="Port to listen on (8090).")
    parser.add_argument(
        "--ttft-ms", type=float, default=0.0, help="Delay before the first token, in ms (0)."
    )
    parser.add_argument(
        "--per-token-ms", type=float, default=0.0, help="Delay between tokens, in ms (0)."
    )
    parser.add_argument(
        "--required-api-key",
        default=None,
        help="Refuse requests without this key (Bearer or x-api-key) with 401.",
    )
    parser.add_argument(
        "--default-max-tokens",
        type=int,
        default=64,
        help="Answer length cap for OpenAI requests that set none (64).",
    )
    parser.add_argument(
        "--fault-schedule",
        default="",
        help="Comma-separated faults for the next requests, 'ok' for a normal answer "
        "(e.g. 429,ok,500).",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (warning).")


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    schedule = tuple(
        None if name.strip().lower() in _NORMAL else name.strip()
        for name in args.fault_schedule.split(",")
        if args.fault_schedule.strip()
    )
    return SimulatorConfig(
        ttft_ms=args.ttft_ms,
        per_token_ms=args.per_token_ms,
        default_max_tokens=args.default_max_tokens,
        required_api_key=args.required_api_key or None,
        fault_schedule=schedule,
    )


def run_simulator(args: argparse.Namespace) -> int:
    """Serve the simulator until interrupted; 2 for bad settings or a port already in use."""
    import uvicorn

    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"simulate-upstream: {exc}", file=sys.stderr)
        return 2
    # Binding here (not inside uvicorn) turns "address in use" into one line instead of a
    # logged traceback and sys.exit(1).
    try:
        sock = listen_socket(args.host, args.port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(
            f"simulate-upstream: cannot listen on {args.host}:{args.port}: {reason}",
            file=sys.stderr,
        )
        return 2
    app = create_simulator_app(config)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5)
    )
    print(f"simulated upstream listening on http://{args.host}:{args.port}", file=sys.stderr)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m semcache.simulator",
        description="Serve a simulated OpenAI/Anthropic upstream for tests and benchmarks.",
    )
    add_simulator_arguments(parser)
    return run_simulator(parser.parse_args(argv))
