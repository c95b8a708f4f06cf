"""Start one emulator process for the module's tests and talk to it like a real client."""
from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import requests

from services.comfyui_emulator.config import Faults

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONTROL = {
    "step_delay": 0.01, "load_delay": 0.02, "model_load_seconds": 0.0, "preview_method": "none",
    "faults": asdict(Faults()),
    "checkpoints": ["sd15_demo.safetensors", "sdxl_demo.safetensors"],
}


@dataclass
class Emulator:
    base_url: str
    ws_url: str
    data_dir: Path
    process: subprocess.Popen[str]

    def configure(self, **fields: object) -> dict:
        response = requests.post(f"{self.base_url}/emulator/config", json=fields, timeout=5)
        response.raise_for_status()
        return response.json()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_emulator(data_dir: Path, *extra_args: str) -> Emulator:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.comfyui_emulator", "--port", str(port), "--data-dir", str(data_dir),
         "--step-delay", "0.01", "--load-delay", "0.02", *extra_args],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip() == f"ComfyUI emulator listening on http://127.0.0.1:{port}", line
    return Emulator(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", data_dir, process)


def stop_emulator(emulator: Emulator) -> None:
    if emulator.process.poll() is None:
        emulator.process.terminate()
        emulator.process.wait(timeout=10)
    assert emulator.process.stdout is not None
    emulator.process.stdout.close()


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    running = start_emulator(tmp_path_factory.mktemp("comfyui_emulator"))
    yield running
    stop_emulator(running)
    assert running.process.returncode == 0


@pytest.fixture
def emu(emulator: Emulator) -> Iterator[Emulator]:
    """The shared emulator, with its control settings restored after the test."""
    yield emulator
    emulator.configure(**DEFAULT_CONTROL)
