"""ComfyUI's HTTP routes, answering with the real server's statuses, bodies and empty acknowledgements."""
from __future__ import annotations

import io
import json
import mimetypes
import platform
import uuid
from typing import Any

from aiohttp import web
from PIL import Image

from services.comfyui_emulator.catalog import MODEL_FOLDERS, Catalog
from services.comfyui_emulator.config import EmulatorConfig
from services.comfyui_emulator.engine import Engine
from services.comfyui_emulator.hub import SERVER_FEATURES
from services.comfyui_emulator.state import CATALOG, CONFIG, ENGINE, STORAGE
from services.comfyui_emulator.storage import FOLDER_TYPES, Storage
from services.comfyui_emulator.validation import PromptRejected, validate_prompt

COMFYUI_VERSION = "0.3.64"
FAKE_RAM = 16 * 1024**3
REJECT_HTML = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"

routes = web.RouteTableDef()
# /view takes the Content-Type from the file name; ComfyUI serves .webp as image/webp on every host.
mimetypes.add_type("image/webp", ".webp")


def _engine(request: web.Request) -> Engine:
    return request.app[ENGINE]


def _catalog(request: web.Request) -> Catalog:
    return request.app[CATALOG]


def _storage(request: web.Request) -> Storage:
    return request.app[STORAGE]


def _config(request: web.Request) -> EmulatorConfig:
    return request.app[CONFIG]


async def _json_body_or_none(request: web.Request) -> Any:
    """Acknowledgement routes accept an empty or invalid body as 'no instructions'."""
    try:
        return await request.json()
    except ValueError:
        return None


@routes.get("/system_stats")
async def system_stats(request: web.Request) -> web.Response:
    config = _config(request)
    return web.json_response({
        "system": {
            "os": "posix", "ram_total": FAKE_RAM, "ram_free": FAKE_RAM // 2, "comfyui_version": COMFYUI_VERSION,
            "required_frontend_version": "1.27.10", "installed_templates_version": "0.1.95",
            "required_templates_version": "0.1.95", "python_version": platform.python_version(),
            "pytorch_version": "emulated", "embedded_python": False,
            "argv": ["main.py", "--cpu", "--listen", config.host, "--port", str(config.port),
                     "--preview-method", config.preview_method],
            "emulator": True,
        },
        "devices": [{
            "name": "cpu", "type": "cpu", "index": None, "vram_total": FAKE_RAM, "vram_free": FAKE_RAM // 2,
            "torch_vram_total": FAKE_RAM, "torch_vram_free": FAKE_RAM // 2,
        }],
    })


@routes.get("/object_info")
async def object_info(request: web.Request) -> web.Response:
    return web.json_response(_catalog(request).all_specs())


@routes.get("/object_info/{node_class}")
async def object_info_class(request: web.Request) -> web.Response:
    node_class = request.match_info["node_class"]
    catalog = _catalog(request)
    return web.json_response({node_class: catalog.spec(node_class)} if catalog.has(node_class) else {})


@routes.get("/models")
async def model_folders(request: web.Request) -> web.Response:
    return web.json_response(MODEL_FOLDERS)


@routes.get("/models/{folder}")
async def model_files(request: web.Request) -> web.Response:
    files = _catalog(request).model_files(request.match_info["folder"])
    return web.Response(status=404) if files is None else web.json_response(files)


@routes.get("/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    return web.json_response([])


@routes.get("/features")
async def features(request: web.Request) -> web.Response:
    return web.json_response(SERVER_FEATURES)


@routes.get("/prompt")
async def prompt_summary(request: web.Request) -> web.Response:
    return web.json_response(_engine(request).status_data()["status"])


@routes.post("/prompt")
async def post_prompt(request: web.Request) -> web.Response:
    config, engine = _config(request), _engine(request)
    if _take_request_fault(config, "reject_with_html"):
        return web.Response(status=502, text=REJECT_HTML, content_type="text/html")
    body = await request.json()
    number = float(body["number"]) if "number" in body else engine.take_number(bool(body.get("front")))
    if "prompt" not in body:
        return _rejection(PromptRejected("no_prompt", "No prompt provided", "No prompt provided"))
    partial_targets = body.get("partial_execution_targets")
    try:
        result = validate_prompt(body["prompt"], partial_targets, _catalog(request), _storage(request))
    except PromptRejected as rejected:
        return _rejection(rejected)
    prompt_id = str(body.get("prompt_id") or uuid.uuid4())
    extra_data = dict(body.get("extra_data") or {})
    if "client_id" in body:
        extra_data["client_id"] = body["client_id"]
    await engine.enqueue(number, prompt_id, body["prompt"], extra_data, result.outputs)
    return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})


def _take_request_fault(config: EmulatorConfig, name: str) -> bool:
    """Whether a request fault is armed; a one-shot fault is disarmed by taking it."""
    armed = bool(getattr(config.faults, name))
    if armed and not config.faults.persistent:
        setattr(config.faults, name, False)
    return armed


def _rejection(rejected: PromptRejected) -> web.Response:
    return web.json_response({"error": rejected.error, "node_errors": rejected.node_errors}, status=400)


@routes.get("/queue")
async def get_queue(request: web.Request) -> web.Response:
    engine = _engine(request)
    running = [engine.running.as_list()] if engine.running else []
    return web.json_response({"queue_running": running, "queue_pending": [i.as_list() for i in engine.pending]})


@routes.post("/queue")
async def post_queue(request: web.Request) -> web.Response:
    body = await _json_body_or_none(request) or {}
    engine = _engine(request)
    if body.get("clear"):
        await engine.clear_pending()
    if "delete" in body:
        await engine.delete_pending(list(body["delete"]))
    return web.Response(status=200)


@routes.post("/interrupt")
async def interrupt(request: web.Request) -> web.Response:
    body = await _json_body_or_none(request)
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    _engine(request).interrupt(prompt_id)
    return web.Response(status=200)


@routes.post("/free")
async def free(request: web.Request) -> web.Response:
    body = await _json_body_or_none(request) or {}
    if body.get("unload_models") or body.get("free_memory"):
        _engine(request).loaded_models.clear()
        _engine(request).resident_checkpoint = None
    return web.Response(status=200)


@routes.get("/history")
async def get_history(request: web.Request) -> web.Response:
    query = request.rel_url.query
    max_items = int(query["max_items"]) if "max_items" in query else None
    offset = int(query.get("offset", -1))
    return web.json_response(_engine(request).history_page(max_items, offset))


@routes.get("/history/{prompt_id}")
async def get_history_entry(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    entry = _engine(request).history.get(prompt_id)
    if entry and _take_request_fault(_config(request), "truncate_history"):
        body = json.dumps({prompt_id: entry})
        return web.Response(text=body[: len(body) // 2], content_type="application/json")
    return web.json_response({prompt_id: entry} if entry else {})


@routes.post("/history")
async def post_history(request: web.Request) -> web.Response:
    body = await _json_body_or_none(request) or {}
    history = _engine(request).history
    if body.get("clear"):
        history.clear()
    for prompt_id in body.get("delete", []):
        history.pop(prompt_id, None)
    return web.Response(status=200)


@routes.post("/upload/image")
async def upload_image(request: web.Request) -> web.Response:
    form = await request.post()
    image = form.get("image")
    kind = str(form.get("type") or "input")
    if not isinstance(image, web.FileField) or not image.filename or kind not in FOLDER_TYPES:
        return web.Response(status=400)
    subfolder = str(form.get("subfolder", ""))
    overwrite = str(form.get("overwrite")) in ("true", "1")
    stored = _storage(request).save_upload(kind, subfolder, image.filename, image.file.read(), overwrite)
    if stored is None:
        return web.Response(status=400)
    return web.json_response({"name": stored, "subfolder": subfolder, "type": kind})


@routes.get("/view")
async def view(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    if "filename" not in query or _take_request_fault(_config(request), "view_not_found"):
        return web.Response(status=404)
    status, path = _storage(request).view_path(query.get("type", "output"), query.get("subfolder"), query["filename"])
    if path is None:
        return web.Response(status=status)
    disposition = {"Content-Disposition": f'filename="{path.name}"'}
    channel = query.get("channel", "")
    if "preview" in query:
        return _preview_response(path, query["preview"], channel, disposition)
    if channel == "rgb":
        with Image.open(path) as opened:
            return _png_response(opened.convert("RGB"), disposition)
    if channel == "a":
        with Image.open(path) as opened:
            alpha = opened.getchannel("A") if "A" in opened.getbands() else Image.new("L", opened.size, 255)
            return _png_response(Image.merge("RGBA", (alpha,) * 3 + (Image.new("L", alpha.size, 255),)), disposition)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return web.FileResponse(path, headers={**disposition, "Content-Type": content_type})


def _preview_response(path: Any, preview: str, channel: str, headers: dict[str, str]) -> web.Response:
    parts = preview.split(";")
    image_format = parts[0] if parts[0] in ("webp", "jpeg") and "a" not in channel else "webp"
    quality = int(parts[-1]) if parts[-1].isdigit() else 90
    buffer = io.BytesIO()
    with Image.open(path) as opened:
        picture = opened.convert("RGB") if image_format == "jpeg" or channel == "rgb" else opened.copy()
    picture.save(buffer, format=image_format, quality=quality)
    return web.Response(body=buffer.getvalue(), content_type=f"image/{image_format}", headers=headers)


def _png_response(picture: Image.Image, headers: dict[str, str]) -> web.Response:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return web.Response(body=buffer.getvalue(), content_type="image/png", headers=headers)


@routes.get("/emulator/config")
async def get_emulator_config(request: web.Request) -> web.Response:
    return web.json_response(_config(request).control_view())


@routes.get("/emulator/stats")
async def get_emulator_stats(request: web.Request) -> web.Response:
    """What tests and benches count: the resident checkpoint, how often it was switched, and
    when (Unix seconds) each recent prompt's last ``executed`` message was sent."""
    engine = _engine(request)
    return web.json_response({"resident_checkpoint": engine.resident_checkpoint,
                              "checkpoint_loads": engine.checkpoint_loads,
                              "executed_sent_at": engine.executed_sent_at})


@routes.post("/emulator/config")
async def post_emulator_config(request: web.Request) -> web.Response:
    config = _config(request)
    try:
        config.apply_update(await request.json())
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(config.control_view())

