"""CLI: python -m services.comfyui_emulator --port 8188 --data-dir DIR ..."""
from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiohttp import web

from services.comfyui_emulator.app import create_app
from services.comfyui_emulator.config import DEFAULT_CHECKPOINTS, DEFAULT_UPSCALE_MODELS, PREVIEW_METHODS, EmulatorConfig


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def parse_args(argv: list[str] | None = None) -> EmulatorConfig:
    parser = argparse.ArgumentParser(prog="python -m services.comfyui_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--data-dir", type=Path, default=None, help="input/output/temp live here (default: a temp dir)")
    parser.add_argument("--step-delay", type=float, default=0.05, help="seconds per sampler step")
    parser.add_argument("--load-delay", type=float, default=0.2, help="seconds to 'load' a model on first use")
    parser.add_argument("--model-load-seconds", type=float, default=0.0,
                        help="seconds to switch the resident checkpoint (one at a time, as on a GPU)")
    parser.add_argument("--preview-method", choices=PREVIEW_METHODS, default="none")
    parser.add_argument("--checkpoints", type=_names, default=list(DEFAULT_CHECKPOINTS))
    parser.add_argument("--upscale-models", type=_names, default=list(DEFAULT_UPSCALE_MODELS))
    parser.add_argument("--loras", type=_names, default=None, help="comma-separated LoRA files ('' for none)")
    parser.add_argument("--diffusion-models", type=_names, default=None,
                        help="comma-separated diffusion (UNET) model files ('' for none)")
    args = parser.parse_args(argv)
    config = EmulatorConfig(
        host=args.host, port=args.port, data_dir=args.data_dir, step_delay=args.step_delay,
        load_delay=args.load_delay, model_load_seconds=args.model_load_seconds, preview_method=args.preview_method, checkpoints=args.checkpoints,
        upscale_models=args.upscale_models,
    )
    if args.loras is not None:
        config.loras = args.loras
    if args.diffusion_models is not None:
        config.diffusion_models = args.diffusion_models
    return config


async def serve(config: EmulatorConfig) -> None:
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    print(f"ComfyUI emulator listening on http://{config.host}:{config.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
