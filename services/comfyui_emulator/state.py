"""Typed keys for the objects the routes share through the aiohttp application."""
from aiohttp import web

from services.comfyui_emulator.catalog import Catalog
from services.comfyui_emulator.config import EmulatorConfig
from services.comfyui_emulator.engine import Engine
from services.comfyui_emulator.hub import Hub
from services.comfyui_emulator.storage import Storage

CONFIG = web.AppKey("config", EmulatorConfig)
STORAGE = web.AppKey("storage", Storage)
HUB = web.AppKey("hub", Hub)
CATALOG = web.AppKey("catalog", Catalog)
ENGINE = web.AppKey("engine", Engine)
