"""Emulated node classes: same inputs and outputs as ComfyUI's, images from images.synthesize."""
from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo

from services.comfyui_emulator import images
from services.comfyui_emulator.images import Recipe
from services.comfyui_emulator.storage import Storage

UI = dict[str, Any] | None
NodeResult = tuple[tuple[Any, ...], UI]


@dataclass(frozen=True)
class Model:
    name: str
    loras: tuple[str, ...] = ()

    @property
    def identity(self) -> str:
        return "+".join((self.name, *self.loras))


@dataclass(frozen=True)
class Clip:
    name: str
    loras: tuple[str, ...] = ()


@dataclass(frozen=True)
class Vae:
    name: str


@dataclass(frozen=True)
class UpscaleModel:
    name: str
    scale: int


@dataclass(frozen=True)
class Conditioning:
    text: str
    guidance: float | None = None


@dataclass(frozen=True)
class Latent:
    width: int
    height: int
    batch_size: int
    pictures: tuple[Image.Image, ...] | None = field(default=None, compare=False)


class NodeContext(Protocol):
    """What a node may ask of the executor."""

    storage: Storage
    node_id: str
    graph: dict[str, Any]
    extra_data: dict[str, Any]

    async def load_model(self, name: str) -> None: ...

    async def switch_checkpoint(self, name: str) -> None: ...

    async def sampler_step(self, step: int, total: int, picture: Image.Image) -> None: ...

    def preview_prefix(self) -> str: ...


async def checkpoint_loader(ctx: NodeContext, ckpt_name: str) -> NodeResult:
    await ctx.switch_checkpoint(ckpt_name)
    return (Model(ckpt_name), Clip(ckpt_name), Vae(ckpt_name)), None


async def unet_loader(ctx: NodeContext, unet_name: str, weight_dtype: str) -> NodeResult:
    await ctx.switch_checkpoint(unet_name)
    return (Model(unet_name),), None


async def dual_clip_loader(ctx: NodeContext, clip_name1: str, clip_name2: str, type: str, device: str = "default") -> NodeResult:
    return (Clip(f"{clip_name1}+{clip_name2}"),), None


async def vae_loader(ctx: NodeContext, vae_name: str) -> NodeResult:
    return (Vae(vae_name),), None


async def lora_loader(ctx: NodeContext, model: Model, clip: Clip, lora_name: str,
                      strength_model: float, strength_clip: float) -> NodeResult:
    tag = f"{lora_name}@{strength_model:g}/{strength_clip:g}"
    return (replace(model, loras=(*model.loras, tag)), replace(clip, loras=(*clip.loras, tag))), None


async def upscale_model_loader(ctx: NodeContext, model_name: str) -> NodeResult:
    scale = next((factor for factor in (2, 3, 4, 8) if f"x{factor}" in model_name.lower()), 4)
    return (UpscaleModel(model_name, scale),), None


async def clip_text_encode(ctx: NodeContext, text: str, clip: Clip) -> NodeResult:
    return (Conditioning(text),), None


async def flux_guidance(ctx: NodeContext, conditioning: Conditioning, guidance: float) -> NodeResult:
    return (replace(conditioning, guidance=guidance),), None


async def conditioning_zero_out(ctx: NodeContext, conditioning: Conditioning) -> NodeResult:
    return (Conditioning(""),), None


async def empty_latent(ctx: NodeContext, width: int, height: int, batch_size: int = 1) -> NodeResult:
    return (Latent(width, height, batch_size),), None


async def _sample(ctx: NodeContext, model: Model, seed: int, steps: int, positive: Conditioning,
                  negative: Conditioning, latent: Latent, denoise: float) -> Latent:
    pictures = []
    for index in range(latent.batch_size):
        recipe = Recipe(positive.text, negative.text, seed, latent.width, latent.height, index, model.identity)
        picture = images.synthesize(recipe)
        if latent.pictures is not None:
            picture = images.blend_onto(latent.pictures[index % len(latent.pictures)], picture, denoise)
        pictures.append(picture)
    for step in range(1, steps + 1):
        await ctx.sampler_step(step, steps, pictures[0])
    return replace(latent, pictures=tuple(pictures))


async def ksampler(ctx: NodeContext, model: Model, seed: int, steps: int, cfg: float, sampler_name: str,
                   scheduler: str, positive: Conditioning, negative: Conditioning, latent_image: Latent,
                   denoise: float = 1.0) -> NodeResult:
    return (await _sample(ctx, model, seed, steps, positive, negative, latent_image, denoise),), None


async def ksampler_advanced(ctx: NodeContext, model: Model, add_noise: str, noise_seed: int, steps: int,
                            cfg: float, sampler_name: str, scheduler: str, positive: Conditioning,
                            negative: Conditioning, latent_image: Latent, start_at_step: int, end_at_step: int,
                            return_with_leftover_noise: str) -> NodeResult:
    run_steps = max(0, min(steps, end_at_step) - start_at_step)
    denoise = run_steps / steps
    return (await _sample(ctx, model, noise_seed, run_steps, positive, negative, latent_image, denoise),), None


async def latent_upscale(ctx: NodeContext, samples: Latent, upscale_method: str, width: int, height: int,
                         crop: str) -> NodeResult:
    width = width or round(samples.width * height / samples.height)
    height = height or round(samples.height * width / samples.width)
    pictures = None
    if samples.pictures is not None:
        pictures = tuple(images.resize(p, width, height, upscale_method) for p in samples.pictures)
    return (Latent(width, height, samples.batch_size, pictures),), None


async def vae_decode(ctx: NodeContext, samples: Latent, vae: Vae) -> NodeResult:
    if samples.pictures is None:
        grey = Image.new("RGB", (samples.width, samples.height), (128, 128, 128))
        return ([grey] * samples.batch_size,), None
    return (list(samples.pictures),), None


async def vae_encode(ctx: NodeContext, pixels: list[Image.Image], vae: Vae) -> NodeResult:
    first = pixels[0]
    return (Latent(first.width, first.height, len(pixels), tuple(pixels)),), None


async def load_image(ctx: NodeContext, image: str) -> NodeResult:
    path = ctx.storage.input_path(image)
    if path is None:
        raise FileNotFoundError(f"Invalid image file: {image}")
    with Image.open(path) as opened:
        picture = ImageOps.exif_transpose(opened).convert("RGB")
    mask = Image.new("L", picture.size, 0)
    return ([picture], mask), None


async def image_scale(ctx: NodeContext, image: list[Image.Image], upscale_method: str, width: int, height: int,
                      crop: str) -> NodeResult:
    scaled = []
    for picture in image:
        target_w = width or round(picture.width * height / picture.height)
        target_h = height or round(picture.height * width / picture.width)
        if crop == "center":
            scaled.append(ImageOps.fit(picture, (max(1, target_w), max(1, target_h))))
        else:
            scaled.append(images.resize(picture, target_w, target_h, upscale_method))
    return (scaled,), None


async def image_scale_by(ctx: NodeContext, image: list[Image.Image], upscale_method: str, scale_by: float) -> NodeResult:
    return ([images.resize(p, round(p.width * scale_by), round(p.height * scale_by), upscale_method) for p in image],), None


async def image_upscale_with_model(ctx: NodeContext, upscale_model: UpscaleModel, image: list[Image.Image]) -> NodeResult:
    factor = upscale_model.scale
    return ([images.resize(p, p.width * factor, p.height * factor, "lanczos") for p in image],), None


async def image_from_batch(ctx: NodeContext, image: list[Image.Image], batch_index: int, length: int) -> NodeResult:
    """As ComfyUI: an index past the batch takes its last image, a length past its end what remains."""
    batch_index = min(len(image) - 1, batch_index)
    length = min(len(image) - batch_index, length)
    return (image[batch_index:batch_index + length],), None


async def image_scale_to_max_dimension(ctx: NodeContext, image: list[Image.Image], upscale_method: str,
                                       largest_size: int) -> NodeResult:
    """The longer side becomes exactly largest_size (small images are upscaled too)."""
    scaled = []
    for picture in image:
        width, height = picture.size
        if width > height:
            size = (largest_size, round(height / width * largest_size))
        elif height > width:
            size = (round(width / height * largest_size), largest_size)
        else:
            size = (largest_size, largest_size)
        scaled.append(picture if picture.size == size else images.resize(picture, *size, upscale_method))
    return (scaled,), None


def _png_metadata(ctx: NodeContext) -> PngInfo:
    """ComfyUI's PNG metadata: the prompt, then each extra_pnginfo entry (the UI's workflow), as text."""
    metadata = PngInfo()
    metadata.add_text("prompt", json.dumps(ctx.graph))
    for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
        metadata.add_text(key, json.dumps(value))
    return metadata


def _write_pngs(ctx: NodeContext, pictures: list[Image.Image], kind: str, filename_prefix: str) -> UI:
    folder, subfolder, prefix, counter = ctx.storage.next_save_path(kind, filename_prefix)
    metadata = _png_metadata(ctx)
    results = []
    for offset, picture in enumerate(pictures):
        filename = f"{prefix}_{counter + offset:05}_.png"
        picture.save(folder / filename, format="PNG", pnginfo=metadata, compress_level=1 if kind == "temp" else 4)
        results.append({"filename": filename, "subfolder": subfolder, "type": kind})
    return {"images": results}


async def save_image(ctx: NodeContext, images: list[Image.Image], filename_prefix: str = "ComfyUI") -> NodeResult:
    return (), _write_pngs(ctx, images, "output", filename_prefix)


WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}


def _webp_exif(prompt: dict[str, Any], extra_pnginfo: dict[str, Any] | None) -> Image.Exif:
    """ComfyUI's WebP metadata: the prompt in tag 0x0110, extra_pnginfo entries from 0x010F downward."""
    exif = Image.Exif()
    exif[0x0110] = f"prompt:{json.dumps(prompt)}"
    for tag, (key, value) in zip(range(0x010F, 0, -1), (extra_pnginfo or {}).items()):
        exif[tag] = f"{key}:{json.dumps(value)}"
    return exif


async def save_animated_webp(ctx: NodeContext, images: list[Image.Image], filename_prefix: str, fps: float,
                             lossless: bool, quality: int, method: str) -> NodeResult:
    """The whole batch as one WebP (a still one for a single image), as ComfyUI writes it."""
    folder, subfolder, prefix, counter = ctx.storage.next_save_path("output", filename_prefix)
    filename = f"{prefix}_{counter:05}_.webp"
    first, *rest = images
    exif = _webp_exif(ctx.graph, ctx.extra_data.get("extra_pnginfo"))
    first.save(folder / filename, format="WEBP", save_all=True, append_images=rest, duration=int(1000.0 / fps),
               lossless=lossless, quality=quality, method=WEBP_METHODS[method], exif=exif)
    ui = {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": [len(images) > 1]}
    return (), ui


async def preview_image(ctx: NodeContext, images: list[Image.Image]) -> NodeResult:
    return (), _write_pngs(ctx, images, "temp", ctx.preview_prefix())


def random_preview_letters() -> str:
    return "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))


NODE_FUNCTIONS: dict[str, Callable[..., Awaitable[NodeResult]]] = {
    "CheckpointLoaderSimple": checkpoint_loader,
    "UNETLoader": unet_loader,
    "DualCLIPLoader": dual_clip_loader,
    "VAELoader": vae_loader,
    "LoraLoader": lora_loader,
    "UpscaleModelLoader": upscale_model_loader,
    "CLIPTextEncode": clip_text_encode,
    "FluxGuidance": flux_guidance,
    "ConditioningZeroOut": conditioning_zero_out,
    "EmptyLatentImage": empty_latent,
    "EmptySD3LatentImage": empty_latent,
    "KSampler": ksampler,
    "KSamplerAdvanced": ksampler_advanced,
    "LatentUpscale": latent_upscale,
    "VAEDecode": vae_decode,
    "VAEEncode": vae_encode,
    "LoadImage": load_image,
    "ImageScale": image_scale,
    "ImageScaleBy": image_scale_by,
    "ImageUpscaleWithModel": image_upscale_with_model,
    "ImageFromBatch": image_from_batch,
    "ImageScaleToMaxDimension": image_scale_to_max_dimension,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
    "SaveAnimatedWEBP": save_animated_webp,
}
