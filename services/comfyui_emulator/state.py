"""Typed keys for the objects the routes share through the aiohttp application."""
from aiohttp import web

from .catalog import Catalog
from .config import EmulatorConfig
from .engine import Engine
from .hub import Hub
from .storage import Storage

CONFIG = web.AppKey("config", EmulatorConfig)
STORAGE = web.AppKey("storage", Storage)
HUB = web.AppKey("hub", Hub)
CATALOG = web.AppKey("catalog", Catalog)
ENGINE = web.AppKey("engine", Engine)
