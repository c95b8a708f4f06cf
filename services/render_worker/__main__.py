"""Start a render worker for one ComfyUI:

    python -m services.render_worker --comfyui http://gpu-1:8188 [--name gpu-1] [--prompts 2]
                                     [--workflows text2img,img2img]

It waits until that ComfyUI answers, works out which workflows it can run (node
classes and model kinds), and runs a Celery worker consuming exactly those workflows'
queues (``<RENDER_QUEUE>.<workflow>``) with ``--prompts`` jobs at once (threads), so the
next prompt is already inside ComfyUI when the current one finishes. ``--workflows``
narrows that to the workflows named (those the ComfyUI can run).

SIGTERM drains the worker: it stops taking jobs, gives those in flight
``RENDER_DRAIN_SECONDS`` to finish, hands the rest back to their queue for another worker,
and exits. A second SIGTERM (or SIGQUIT) stops at once; the reconciler then re-queues what
was running once the heartbeat expires.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time

log = logging.getLogger("render_worker")


def _wait_for_comfyui(url: str, worker_id: str) -> None:
    """Until ComfyUI answers; meanwhile ``/metrics`` reports it down for this worker."""
    from services.render.metrics import COMFYUI_UP
    from services.render_worker.comfyui import ComfyUIClient, ComfyUIError

    client, delay = ComfyUIClient(url), 0.5
    while True:
        try:
            client.system_stats()
            return
        except ComfyUIError as exc:
            COMFYUI_UP.labels(worker_id, client.base_url).set(0)
            print(f"render worker: ComfyUI at {url} does not answer yet ({exc.message}); retrying in {delay:.1f} s",
                  file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.render_worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", help="ComfyUI base URL (default: COMFYUI_URL)")
    parser.add_argument("--name", default=f"render-{socket.gethostname()}-{os.getpid()}",
                        help="worker name; with the host, <name>@<host> (the Celery node name) names the worker "
                             "in the fleet")
    parser.add_argument("--prompts", type=int, help="prompts kept inside ComfyUI at once "
                                                    "(default: RENDER_PROMPTS_IN_FLIGHT, 2)")
    parser.add_argument("--workflows", help="comma-separated workflows to serve (default: every one the "
                                              "ComfyUI can run)")
    parser.add_argument("--loglevel", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if args.comfyui:
        os.environ["COMFYUI_URL"] = args.comfyui.rstrip("/")
    if args.prompts:
        os.environ["RENDER_PROMPTS_IN_FLIGHT"] = str(args.prompts)

    from services.render.config import load_config
    from shared.config import load_settings
    from shared.metrics import serve_metrics
    serve_metrics("render-worker")  # from the start: a worker waiting for its ComfyUI is seen waiting
    _wait_for_comfyui(load_config(load_settings()).comfyui_url, f"{args.name}@{socket.gethostname()}")

    from services.render_worker import worker
    from services.render_worker.worker import capable_queues, celery, config, context
    if args.workflows:
        worker.only_workflows = {name.strip() for name in args.workflows.split(",") if name.strip()}
    queues = capable_queues(context(f"{args.name}@{socket.gethostname()}"))
    if not queues:
        raise SystemExit(f"ComfyUI at {config.comfyui_url} can run none of the workflows "
                         f"{sorted(worker.only_workflows or []) or ''}; not starting.")
    print(f"render worker: ComfyUI at {config.comfyui_url} runs {queues}", flush=True)
    # No gossip, mingle or Celery heartbeat events (a PUBLISH every 2 s per worker that no one reads):
    # the platform's own heartbeat (services.render_worker.heartbeat) says which workers live.
    celery.worker_main(["worker", "-Q", ",".join(queues), "--pool", "threads",
                        "--concurrency", str(config.prompts_in_flight), "-n", f"{args.name}@%h",
                        "--without-gossip", "--without-mingle", "--without-heartbeat",
                        "--loglevel", args.loglevel])


if __name__ == "__main__":
    main()
