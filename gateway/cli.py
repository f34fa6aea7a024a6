"""`llmops` command line: serve, check-config, mock-upstream (+ control-plane commands)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import GatewayCfg

__all__ = ["main"]


def _load(path: str | None) -> tuple[GatewayCfg, Path | None]:
    from gateway.config import load_config
    from gateway.defaults import default_config

    if path is None:
        return default_config(), None
    return load_config(path), Path(path)


def _serve(args: argparse.Namespace) -> int:
    import msgspec
    import uvicorn

    from gateway.app import create_app
    from gateway.config import ConfigError
    from gateway.defaults import default_config
    from gateway.logs import configure_logging

    try:
        cfg, path = _load(args.config)
    except ConfigError as exc:
        print(f"llmops: invalid config: {exc}", file=sys.stderr)
        return 2
    if any(p.kind == "litellm" for p in cfg.providers) and importlib.util.find_spec("litellm") is None:
        print("llmops: providers of kind 'litellm' need litellm: pip install 'llmops[providers]'", file=sys.stderr)
        return 2
    from gateway.tracing import check_tracing

    try:
        check_tracing(cfg.tracing)  # tracing on needs the otel extra: say so before any worker starts
    except ConfigError as exc:
        print(f"llmops: invalid config: {exc}", file=sys.stderr)
        return 2
    server = cfg.server
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("log_level", args.log_level)) if v}
    if overrides:
        server = msgspec.structs.replace(server, **overrides)
        cfg = msgspec.structs.replace(cfg, server=server)
    configure_logging(server.log_level)
    if args.workers > 1:
        from gateway.workers import serve_workers

        def reload_cfg() -> GatewayCfg:  # what a worker started after a SIGHUP is built from
            fresh, _ = _load(args.config)
            return msgspec.structs.replace(fresh, server=msgspec.structs.replace(fresh.server, **overrides))

        print(f"llmops gateway listening on http://{server.host}:{server.port} ({args.workers} workers)",
              file=sys.stderr, flush=True)
        return serve_workers(cfg, workers=args.workers, config_path=path,
                             default_config=None if path else default_config, reload_cfg=reload_cfg)
    app = create_app(
        cfg, config_path=path, default_config=None if path else default_config, install_signal_handlers=True
    )
    from gateway.server import uvicorn_options

    print(f"llmops gateway listening on http://{server.host}:{server.port}", file=sys.stderr, flush=True)
    # Read deadlines, the request cap and half-close handling live in the protocol (gateway/server.py).
    uvicorn.run(app, **uvicorn_options(server))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config

    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(f"{args.file}: invalid: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: ok ({len(cfg.providers)} providers, {len(cfg.routes)} routes)")
    return 0


def _mock_upstream(args: argparse.Namespace) -> int:
    from adapters.testdoubles.mock_upstream import run_from_args

    run_from_args(args)
    return 0


def _workers(value: str) -> int:
    from gateway.workers import parse_workers

    try:
        return parse_workers(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmops", description="Gateway-first LLMOps platform.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (embedded default config when --config is absent)")
    serve.add_argument("--config", help="YAML config file (see docs/configuration.md)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 4000)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--workers", type=_workers, default=1, metavar="N|auto",
                       help="worker processes sharing the port (default 1; auto: one per core)")
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-config", help="validate a config file and exit (non-zero when invalid)")
    check.add_argument("file")
    check.set_defaults(func=_check_config)

    from adapters.testdoubles import mock_upstream

    mock = sub.add_parser(
        "mock-upstream", help="run the OpenAI-compatible TEST DOUBLE upstream",
        description=mock_upstream.HELP_TEXT,
    )
    mock_upstream.add_cli_arguments(mock)
    mock.set_defaults(func=_mock_upstream)

    if importlib.util.find_spec("adapters.adminapi.cli") is not None:
        from adapters.adminapi.cli import register_cli
        from gateway.config import load_config

        register_cli(sub, load_config=lambda path: load_config(path).control)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
