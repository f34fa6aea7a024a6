"""A command line over ``ServingClient``: deploy, list, get, redeploy, rollback, delete and chat.

    export LLMOPS_URL=http://127.0.0.1:4000 LLMOPS_KEY=<an operator key>
    python examples/serving_cli.py deploy chat-small mdl_01a2… --cpu --wait
    python examples/serving_cli.py chat chat-small "Hello!"
    python examples/serving_cli.py redeploy ep_01a2… --canary 10 --wait
    python examples/serving_cli.py rollback ep_01a2…
    python examples/serving_cli.py delete ep_01a2…

Every answer is printed as one JSON document (pipe it to ``jq``); a refusal prints ``error: <status>
<message>`` (and the envelope's data, when there is some) on stderr and exits 1. The key is read from
``--key`` or ``LLMOPS_KEY`` and never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import msgspec

from control.serving.client import ServingClient, ServingError

_ENCODE = msgspec.json.Encoder()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serving_cli", description="Deploy catalog models as llmops endpoints.")
    parser.add_argument("--url", default=os.environ.get("LLMOPS_URL", "http://127.0.0.1:4000"),
                        help="the llmops server (default $LLMOPS_URL or http://127.0.0.1:4000)")
    parser.add_argument("--key", default=os.environ.get("LLMOPS_KEY"), help="API key (default $LLMOPS_KEY)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds --wait waits (default 120)")
    sub = parser.add_subparsers(dest="command", required=True)

    deploy = sub.add_parser("deploy", help="deploy a catalog model as an endpoint")
    deploy.add_argument("name", help="endpoint name (lowercase letters, digits, '-')")
    deploy.add_argument("model_id")
    deploy.add_argument("--environment", choices=["DEV", "STG", "PROD"], default="DEV")
    deploy.add_argument("--route", help="gateway route (default: the name)")
    deploy.add_argument("--image", help="serving runtime image (default: the server's)")
    gpu = deploy.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", dest="use_gpu", action="store_true", default=None)
    gpu.add_argument("--cpu", dest="use_gpu", action="store_false")
    deploy.add_argument("--wait", action="store_true", help="wait until it is healthy")

    listing = sub.add_parser("list", help="list endpoints")
    listing.add_argument("--environment", choices=["DEV", "STG", "PROD"])
    listing.add_argument("--model-id")
    listing.add_argument("--status")

    get = sub.add_parser("get", help="one endpoint: status, slots, traffic split, revision")
    get.add_argument("endpoint_id")

    redeploy = sub.add_parser("redeploy", help="a new revision, optionally as a canary")
    redeploy.add_argument("endpoint_id")
    redeploy.add_argument("--canary", type=int, metavar="PERCENT", help="the new revision's share (1-99)")
    redeploy.add_argument("--image")
    redeploy.add_argument("--reason", default="")
    redeploy.add_argument("--wait", action="store_true")

    rollback = sub.add_parser("rollback", help="drop the canary, or go back to the previous (or a named) revision")
    rollback.add_argument("endpoint_id")
    rollback.add_argument("--revision", type=int)
    rollback.add_argument("--reason", default="")

    delete = sub.add_parser("delete", help="delete the endpoint and everything it runs")
    delete.add_argument("endpoint_id")

    chat = sub.add_parser("chat", help="one chat completion through the gateway")
    chat.add_argument("route", help="a route name or an endpoint id")
    chat.add_argument("message")
    chat.add_argument("--max-tokens", type=int)
    return parser


def _run(client: ServingClient, args: argparse.Namespace) -> Any:
    match args.command:
        case "deploy":
            endpoint = client.deploy(args.name, args.model_id, environment=args.environment, route=args.route,
                                     serving_runtime_image=args.image, use_gpu=args.use_gpu)
            return client.wait_for_healthy(endpoint.id, timeout_s=args.timeout) if args.wait else endpoint
        case "list":
            return client.list(environment=args.environment, model_id=args.model_id, status=args.status)
        case "get":
            return client.get(args.endpoint_id)
        case "redeploy":
            endpoint = client.redeploy(args.endpoint_id, canary_percent=args.canary,
                                       serving_runtime_image=args.image, reason=args.reason)
            return client.wait_for_healthy(endpoint.id, timeout_s=args.timeout) if args.wait else endpoint
        case "rollback":
            return client.rollback(args.endpoint_id, args.revision, reason=args.reason)
        case "delete":
            return client.delete(args.endpoint_id)
        case "chat":
            params = {} if args.max_tokens is None else {"max_tokens": args.max_tokens}
            reply = client.call_chat_model(args.route, [{"role": "user", "content": args.message}], **params)
            return {"content": reply.content, "provider": reply.provider, "requestId": reply.request_id}
    raise AssertionError(args.command)  # argparse allows only the commands above


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.key:
        print("error: no API key: pass --key or set LLMOPS_KEY", file=sys.stderr)
        return 2
    with ServingClient(args.url, args.key) as client:
        try:
            answer = _run(client, args)
        except ServingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            if exc.data is not None:
                print(_ENCODE.encode(exc.data).decode(), file=sys.stderr)
            return 1
    print(_ENCODE.encode(answer).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
