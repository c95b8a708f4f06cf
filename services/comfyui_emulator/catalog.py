"""Node-class specs (a stripped subset of a real /object_info) with live model and file lists."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from services.comfyui_emulator.config import EmulatorConfig
from services.comfyui_emulator.storage import Storage

SPECS_FILE = Path(__file__).with_name("node_specs.json")

MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
    "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
    "custom_nodes", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders",
]


class Catalog:
    def __init__(self, config: EmulatorConfig, storage: Storage) -> None:
        self._config = config
        self._storage = storage
        self._static: dict[str, dict[str, Any]] = json.loads(SPECS_FILE.read_text())

    def model_files(self, folder: str) -> list[str] | None:
        """Files of a model folder; None for an unknown folder."""
        if folder not in MODEL_FOLDERS:
            return None
        return list({
            "checkpoints": self._config.checkpoints,
            "loras": self._config.loras,
            "upscale_models": self._config.upscale_models,
            "diffusion_models": self._config.diffusion_models,
            "text_encoders": self._config.text_encoders,
            "vae": [v for v in self._config.vaes if v.endswith(".safetensors")],
        }.get(folder, []))

    def has(self, class_type: str) -> bool:
        return class_type in self._static

    def all_specs(self) -> dict[str, dict[str, Any]]:
        return {name: self.spec(name) for name in self._static}

    def spec(self, class_type: str) -> dict[str, Any]:
        """The object_info entry for a class, with combos reflecting current files."""
        spec = copy.deepcopy(self._static[class_type])
        required = spec["input"]["required"]
        live_choices = {
            "CheckpointLoaderSimple": {"ckpt_name": self._config.checkpoints},
            "LoraLoader": {"lora_name": self._config.loras},
            "LoadImage": {"image": self._storage.input_images()},
            "UNETLoader": {"unet_name": self._config.diffusion_models},
            "DualCLIPLoader": {"clip_name1": self._config.text_encoders, "clip_name2": self._config.text_encoders},
            "VAELoader": {"vae_name": self._config.vaes},
        }.get(class_type, {})
        for name, choices in live_choices.items():
            required[name][0] = list(choices)
        if class_type == "UpscaleModelLoader":
            required["model_name"][1]["options"] = list(self._config.upscale_models)
        return spec

    def is_output_node(self, class_type: str) -> bool:
        return bool(self._static[class_type].get("output_node"))

    def output_types(self, class_type: str) -> list[str]:
        return list(self._static[class_type]["output"])

    def display_name(self, class_type: str) -> str:
        return str(self._static[class_type]["display_name"])
