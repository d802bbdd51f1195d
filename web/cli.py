"""`imagegen serve` and `imagegen generate`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.settings import Settings, SettingsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagegen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the HTTP service")
    for option in Settings.options():
        if option.flag is not None:  # given as text; Settings converts and checks it
            serve.add_argument(option.flag, dest=option.name, help=f"{option.help} ({option.env})")

    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    keys.add_argument("--keys-file", type=Path, help="(IMAGEGEN_KEYS_FILE)")
    keys.add_argument("--store", help="redis: keys are in Redis (IMAGEGEN_STORE)")
    keys.add_argument("--redis-url", help="(IMAGEGEN_REDIS_URL)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="mint a key; it is printed this once")
    create.add_argument("--name", required=True)
    create.add_argument("--models", help="comma-separated models it may use (default: all)")
    create.add_argument("--expires-at", help="Unix time or ISO 8601 date and time")
    create.add_argument("--requests-per-minute", type=int)
    create.add_argument("--max-concurrent", type=int)
    create.add_argument("--device-seconds-per-day", type=float)
    key_commands.add_parser("list", help="every key, without secrets")
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")

    generate = commands.add_parser("generate", help="generate once, with no server")
    generate.add_argument("prompt")
    generate.add_argument("-o", "--output", type=Path, required=True)
    generate.add_argument("--model", help="a model of --models (default: the embedded one)")
    generate.add_argument("--models", type=Path)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--size", help="WxH (default: the model's)")
    generate.add_argument("--steps", type=int)
    return parser


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from imagegen.registry import load_specs
    from web.app import create_app
    from web.request_log import configure_logging
    from web.server import uvicorn_config

    flags = {option.name: getattr(args, option.name) for option in Settings.options()
             if option.flag is not None}
    settings = Settings.load(**flags)
    # A bad models.toml is one line naming the model and field (ModelConfigError), here,
    # not a traceback from inside the server's start-up.
    load_specs(settings.models)
    configure_logging(settings.log_level)
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()


def generate(args: argparse.Namespace) -> None:
    import torch

    from imagegen.encode import encode_image
    from imagegen.registry import EMBEDDED_MODEL_NAME, load_pipeline, load_specs

    specs = load_specs(args.models)
    spec = specs.get(args.model or EMBEDDED_MODEL_NAME)
    if spec is None:
        raise SettingsError("--model names no model of the models file")
    width, height = spec.default_size
    if args.size:
        width, height = (int(part) for part in args.size.lower().split("x"))
    pipeline = load_pipeline(spec)
    pipeline.check_prompt(args.prompt)
    generator = torch.Generator(device=pipeline.device).manual_seed(args.seed)
    output = pipeline([args.prompt], negative_prompts=[None], generators=[generator],
                      width=width, height=height,
                      num_inference_steps=args.steps or spec.default_steps,
                      guidance_scale=spec.default_guidance)
    suffix = args.output.suffix.lower().lstrip(".")
    output_format = {"jpg": "jpeg"}.get(suffix, suffix if suffix in ("webp", "jpeg") else "png")
    args.output.write_bytes(encode_image(output.images[0], output_format))
    print(f"wrote {args.output} (seed {args.seed})")


def manage_keys(args: argparse.Namespace) -> None:
    import asyncio
    import json
    import time

    from service.tenancy import KeyNotFound, Limits, Tenancy

    settings = Settings.load(keys_file=args.keys_file, store=args.store,
                             redis_url=args.redis_url)
    tenancy = Tenancy.create(auth="keys", demo_enabled=False, demo_limits=Limits(),
                             redis_url=settings.shared_redis_url, keys_file=settings.keys_file,
                             usage_retention_days=settings.usage_retention_days,
                             lease_seconds=1, clock=time.time)

    async def run() -> object:
        try:
            if args.keys_command == "create":
                limits = Limits(args.requests_per_minute, args.max_concurrent,
                                args.device_seconds_per_day)
                expires_at: object = args.expires_at
                if isinstance(expires_at, str) and expires_at.replace(".", "", 1).isdigit():
                    expires_at = float(expires_at)
                record, key = await tenancy.issue_key(
                    name=args.name, expires_at=expires_at, limits=limits,
                    models=args.models.split(",") if args.models else None)
                return {**record.public(), "key": key}
            if args.keys_command == "list":
                return {"object": "list", "data": [k.public() for k in await tenancy.list_keys()]}
            return (await tenancy.revoke_key(args.key_id)).public()
        finally:
            await tenancy.close()

    try:
        print(json.dumps(asyncio.run(run()), indent=2))
    except KeyNotFound:
        raise ValueError(f"no key has the id {args.key_id}") from None


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    commands = {"serve": serve, "generate": generate, "keys": manage_keys}
    try:
        commands[args.command](args)
    except (SettingsError, ValueError) as exc:
        # One clear line naming the setting; no traceback.
        print(f"imagegen: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
