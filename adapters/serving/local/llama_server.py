"""``python -m adapters.serving.local.llama_server``: a real small model (GGUF) behind an OpenAI-compatible API.

llama-cpp-python's own server (``python -m llama_cpp.server``) answers ``/v1/models`` and the completion routes
but has no ``/health``, which the local runtime's readiness (like vLLM's probes) asks for. This wraps the
same app, adds ``GET /health`` and serves it with uvicorn. ``create_app`` loads the model before the socket
opens, so both probes answer only once the model is in memory. Needs the optional ``llama-cpp-python`` (with
its ``server`` extra); not installed by default, so nothing here is imported unless the runtime chose it.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.serving.local.llama_server")
    parser.add_argument("--model", required=True, help="path of the .gguf file")
    parser.add_argument("--model-alias", required=True, help="the name the server answers to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args(argv)

    import importlib

    import uvicorn

    # Imported by name: the optional package is absent from type checking and from most installs.
    server_app = importlib.import_module("llama_cpp.server.app")
    server_settings = importlib.import_module("llama_cpp.server.settings")
    app = server_app.create_app(
        # interrupt_requests off: the gateway sends concurrent requests; each waits its turn instead of cutting
        # the stream in progress short (llama-cpp-python's default).
        server_settings=server_settings.ServerSettings(host=args.host, port=args.port, interrupt_requests=False),
        model_settings=[server_settings.ModelSettings(model=args.model, model_alias=args.model_alias,
                                                      n_ctx=args.n_ctx, verbose=False)])

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
