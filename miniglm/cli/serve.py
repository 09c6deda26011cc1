"""`miniglm serve`: an OpenAI-compatible HTTP API (and with --ui a web chat page) over checkpoints.

    miniglm serve runs/sft                                   # http://127.0.0.1:7860/v1, this machine only
    miniglm serve sft=runs/sft pre=runs/small --ui           # two models; the chat page at /ui/
    miniglm serve runs/sft --host 0.0.0.0 --api-key-file key.txt --ui    # the local network, with a key

Each RUN_OR_CHECKPOINT is a run directory (its best checkpoint) or a checkpoint directory, served
under the id NAME (NAME=PATH) or else the run's name; a request picks one with "model". Requests
arriving while others generate join the running batch at the next token (continuous batching);
at most --max-batch generate at once and --max-queue wait, beyond that the answer is 429.
Listening on anything but a loopback address needs an API key (--api-key-file, or --api-key),
or an explicit --no-auth. The SampleConfig fields below set the defaults for what a request
leaves out (as `miniglm sample` uses them), and --device/--dtype where the models run.
--port 0 picks a free port; the first line printed gives the address.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

from miniglm.cli.common import Parser
from miniglm.config import SampleConfig, add_config_arguments, load_config, overrides_from_args
from miniglm.errors import UserError

UI_PATH = "/ui"


def build_parser() -> Parser:
    p = Parser(prog="miniglm serve", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("models", nargs="+", metavar="RUN_OR_CHECKPOINT",
                   help="[NAME=]PATH of a run or checkpoint directory; NAME is the model id (default: the run's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 = any free port)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' (visible in ps: "
                     "prefer --api-key-file)")
    key.add_argument("--api-key-file", metavar="FILE", help="read the API key from the first line of FILE")
    key.add_argument("--no-auth", action="store_true", help="allow a non-loopback --host without a key")
    p.add_argument("--ui", action="store_true", help=f"also serve the web chat page at {UI_PATH}/")
    p.add_argument("--max-batch", type=int, default=16, metavar="N",
                   help="generations decoded together per model (default 16)")
    p.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="requests waiting for a batch slot per model before answering 429 (default 64)")
    p.add_argument("--max-context", type=int, default=0, metavar="N",
                   help="most tokens of prompt + answer per request (default 0: the model's context)")
    p.add_argument("--max-body-kb", type=int, default=1024, metavar="KB",
                   help="largest request body accepted, in KiB (default 1024)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="CPU threads for the models (default 0: torch's default, one per core; on a machine "
                        "shared with other work fewer threads are often faster)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="uvicorn's log level (info logs every request; default warning)")
    add_config_arguments(p, SampleConfig, skip=("seed",))  # a request's seed, or a random one
    return p


def read_key(args) -> str | None:
    if args.api_key_file:
        path = Path(args.api_key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read the API key file {path}: {e}") from None
        key = text.splitlines()[0].strip() if text.strip() else ""
        if not key:
            raise UserError(f"the API key file {path} is empty")
        return key
    if args.api_key is not None and not args.api_key.strip():
        raise UserError("--api-key is empty")
    return args.api_key.strip() if args.api_key else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_args(args, key: str | None) -> None:
    for flag, value, least in (("--max-batch", args.max_batch, 1), ("--max-queue", args.max_queue, 0),
                               ("--threads", args.threads, 0),
                               ("--max-context", args.max_context, 0), ("--max-body-kb", args.max_body_kb, 1)):
        if value < least:
            raise UserError(f"{flag} must be >= {least}, got {value}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    if not is_loopback(args.host) and key is None and not args.no_auth:
        raise UserError(f"refusing to listen on {args.host} without an API key: anyone on the network could "
                        "use the models; pass --api-key-file FILE (or --no-auth to allow it)")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (so --port 0 can report the port it got, and a taken port is a clear error)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted connections inherit this: a response's headers and body go out without waiting
        # for the client's delayed ACK (40 ms per request otherwise)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    key = read_key(args)
    check_args(args, key)
    cfg = load_config(SampleConfig, overrides=overrides_from_args(args))
    from miniglm.extras import require

    for module in ("fastapi", "uvicorn", "sse_starlette", *(["gradio"] if args.ui else [])):
        require(module, "serve")
    from miniglm.serve.models import Registry, parse_model_specs

    specs = parse_model_specs(args.models)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    registry = Registry(specs, cfg, args.max_batch, args.max_queue, args.max_context or None)
    sock = bind(args.host, args.port)
    return serve(args, registry, sock, key, cfg)


def serve(args, registry, sock: socket.socket, key: str | None, cfg: SampleConfig) -> int:
    import uvicorn

    from miniglm.serve.app import ServerSettings, create_app

    settings = ServerSettings(key, args.max_body_kb * 1024, cfg, UI_PATH if args.ui else None)
    app = create_app(registry, settings)
    if args.ui:
        from miniglm.serve.web import mount_web

        mount_web(app, registry, cfg, UI_PATH, key)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=3,
                                           access_log=args.log_level in ("debug", "info")))
    failure: list[str] = []

    def on_failure(message: str) -> None:
        failure.append(message)
        server.should_exit = True

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"miniglm serve: listening on http://{shown}:{port} (API at /v1{', chat page at ' + UI_PATH + '/' if args.ui else ''}"
          f"{', API key required' if key else ''}); loading {', '.join(registry.ids)} ...", flush=True)
    if not is_loopback(args.host) and key:
        print("miniglm serve: note: HTTP is not encrypted; the key and the chats cross the network in clear "
              "text (a trusted LAN, or an HTTPS proxy in front)", flush=True)
    registry.start_loading(on_failure, lambda: print(f"miniglm serve: ready ({', '.join(registry.ids)})", flush=True))
    server.run(sockets=[sock])
    if failure:
        raise UserError(f"could not load the models: {failure[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
