"""Deterministic, cheap image synthesis standing in for diffusion, and preview frames."""
from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

PREVIEW_SIZE = 512
LATENT_SCALE = 8


@dataclass(frozen=True)
class Recipe:
    """Everything that decides how a generated image looks."""

    positive: str
    negative: str
    seed: int
    width: int
    height: int
    batch_index: int
    model: str


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _palette(text: str, model: str) -> list[tuple[int, int, int]]:
    """Four colours derived from the prompt text, so a prompt keeps its mood across seeds."""
    rng = _rng("palette", text, model)
    base_hue = rng.random()
    colours = []
    for offset in (0.0, 0.08, 0.5, 0.58):
        hue = (base_hue + offset + rng.uniform(-0.03, 0.03)) % 1.0
        colours.append(_hsv_to_rgb(hue, rng.uniform(0.45, 0.9), rng.uniform(0.35, 0.95)))
    return colours


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    sector = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][sector]
    return tuple(int(c * 255) for c in rgb)  # type: ignore[return-value]


def synthesize(recipe: Recipe) -> Image.Image:
    """A seeded gradient with soft shapes in a prompt-derived palette."""
    palette = _palette(recipe.positive, recipe.model)
    rng = _rng(recipe)
    grid = Image.new("RGB", (4, 4))
    grid.putdata([rng.choice(palette) for _ in range(16)])
    image = grid.resize((recipe.width, recipe.height), Image.Resampling.BICUBIC)
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    shortest = min(recipe.width, recipe.height)
    for _ in range(rng.randint(3, 7)):
        cx, cy = rng.uniform(0, recipe.width), rng.uniform(0, recipe.height)
        radius = rng.uniform(0.08, 0.35) * shortest
        colour = rng.choice(palette) + (rng.randint(90, 200),)
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        if rng.random() < 0.6:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    blurred = overlay.filter(ImageFilter.BoxBlur(max(1, shortest // 64)))
    return Image.alpha_composite(image.convert("RGBA"), blurred).convert("RGB")


def blend_onto(source: Image.Image, generated: Image.Image, denoise: float) -> Image.Image:
    """img2img: keep `1 - denoise` of the source's structure."""
    return Image.blend(source.convert("RGB").resize(generated.size), generated, max(0.0, min(1.0, denoise)))


def preview_jpeg(target: Image.Image, step: int, steps: int, seed: int) -> bytes:
    """A latent2rgb-like preview: latent resolution, noise fading with progress, fit to 512 px."""
    small = target.resize((max(1, target.width // LATENT_SCALE), max(1, target.height // LATENT_SCALE)))
    noise = Image.effect_noise(small.size, 64 + seed % 32).convert("RGB")
    frame = Image.blend(noise, small, step / steps)
    scale = PREVIEW_SIZE / max(frame.size)
    frame = frame.resize((max(1, round(frame.width * scale)), max(1, round(frame.height * scale))))
    buffer = io.BytesIO()
    frame.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def resize(image: Image.Image, width: int, height: int, method: str = "bilinear") -> Image.Image:
    resample = {
        "nearest-exact": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "area": Image.Resampling.BOX,
        "bicubic": Image.Resampling.BICUBIC,
        "lanczos": Image.Resampling.LANCZOS,
    }.get(method, Image.Resampling.BILINEAR)
    return image.resize((max(1, width), max(1, height)), resample)
