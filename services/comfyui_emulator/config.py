"""Run-time configuration of the emulator, including the fault switches tests flip."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREVIEW_METHODS = ("none", "latent2rgb")
DEFAULT_CHECKPOINTS = ("sd15_demo.safetensors", "sdxl_demo.safetensors")
DEFAULT_UPSCALE_MODELS = ("demo_x4.safetensors",)
# Model lists POST /emulator/config may replace at run time (ComfyUI rereads its folders too).
MODEL_LISTS = ("checkpoints", "upscale_models", "loras", "diffusion_models", "text_encoders", "vaes")


@dataclass
class Faults:
    """Faults armed for the next run (or, for request faults, the next matching request).
    One-shot unless `persistent` is set.

    ``truncate_history``: ``GET /history/<id>`` answers a cut-off JSON body.
    ``view_not_found``: ``GET /view`` answers 404 (the file is gone).
    ``lose_history``: the next run leaves no history entry, as after a restart.
    ``fail_node_class``: a node of this class raises when it runs (not when it is cached), as a
    ComfyUI lacking a codec or memory does: ``execution_error`` names that node, and the outputs
    of the nodes that ran before it stay in the history entry.
    """

    execution_error: str | None = None
    fail_node_class: str | None = None
    hang: bool = False
    drop_socket_after_steps: int | None = None
    crash: bool = False
    reject_with_html: bool = False
    truncate_history: bool = False
    view_not_found: bool = False
    lose_history: bool = False
    persistent: bool = False

    # Faults that act on one HTTP request (consumed there), not on a run.
    REQUEST_FAULTS = ("reject_with_html", "truncate_history", "view_not_found")


@dataclass
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 8188
    data_dir: Path | None = None
    step_delay: float = 0.05
    load_delay: float = 0.2
    model_load_seconds: float = 0.0  # a checkpoint switch (one checkpoint resident at a time)
    preview_method: str = "none"
    checkpoints: list[str] = field(default_factory=lambda: list(DEFAULT_CHECKPOINTS))
    upscale_models: list[str] = field(default_factory=lambda: list(DEFAULT_UPSCALE_MODELS))
    loras: list[str] = field(default_factory=lambda: ["demo_style.safetensors"])
    diffusion_models: list[str] = field(default_factory=lambda: ["flux_demo.safetensors"])
    text_encoders: list[str] = field(default_factory=lambda: ["clip_l.safetensors", "t5xxl_demo.safetensors"])
    vaes: list[str] = field(default_factory=lambda: ["ae.safetensors", "taesd", "pixel_space"])
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if self.preview_method not in PREVIEW_METHODS:
            raise ValueError(f"preview_method must be one of {PREVIEW_METHODS}, got {self.preview_method!r}")

    def control_view(self) -> dict[str, Any]:
        """What GET/POST /emulator/config report."""
        return {
            "step_delay": self.step_delay,
            "load_delay": self.load_delay,
            "model_load_seconds": self.model_load_seconds,
            "preview_method": self.preview_method,
            **{name: list(getattr(self, name)) for name in MODEL_LISTS},
            "faults": dataclasses.asdict(self.faults),
        }

    def apply_update(self, update: dict[str, Any]) -> None:
        """Partial update from POST /emulator/config; unknown keys raise ValueError."""
        fault_names = {f.name for f in dataclasses.fields(Faults)}
        for key, value in update.items():
            if key in ("step_delay", "load_delay", "model_load_seconds"):
                setattr(self, key, float(value))
            elif key == "preview_method":
                if value not in PREVIEW_METHODS:
                    raise ValueError(f"preview_method must be one of {PREVIEW_METHODS}")
                self.preview_method = value
            elif key in MODEL_LISTS and isinstance(value, list):
                setattr(self, key, [str(name) for name in value])
            elif key == "faults" and isinstance(value, dict):
                self.apply_update(value)
            elif key in fault_names:
                setattr(self.faults, key, _coerce_fault(key, value))
            else:
                raise ValueError(f"unknown config field {key!r}")


def _coerce_fault(name: str, value: Any) -> Any:
    if name == "execution_error":
        return None if value in (None, False, "") else ("Injected execution error" if value is True else str(value))
    if name == "fail_node_class":
        return None if value in (None, "") else str(value)
    if name == "drop_socket_after_steps":
        return None if value is None else int(value)
    return bool(value)
