"""The input/output/temp folders, with ComfyUI's naming, upload and path-safety rules."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

FOLDER_TYPES = ("input", "output", "temp")


class Storage:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve()
        self.dirs = {kind: self.root / kind for kind in FOLDER_TYPES}
        shutil.rmtree(self.dirs["temp"], ignore_errors=True)
        for path in self.dirs.values():
            path.mkdir(parents=True, exist_ok=True)

    def input_images(self) -> list[str]:
        """Files at the top level of input/, as LoadImage's combo lists them."""
        return sorted(p.name for p in self.dirs["input"].iterdir() if p.is_file())

    def input_path(self, name: str) -> Path | None:
        """Resolve a LoadImage value (may contain a subfolder); None if missing or escaping."""
        base = self.dirs["input"]
        path = (base / name).resolve()
        if os.path.commonpath((base, path)) != str(base) or not path.is_file():
            return None
        return path

    def next_save_path(self, kind: str, filename_prefix: str) -> tuple[Path, str, str, int]:
        """Return (folder, subfolder, file stem, first counter) following get_save_image_path."""
        subfolder, _, prefix = filename_prefix.rpartition("/")
        folder = (self.dirs[kind] / subfolder).resolve()
        if os.path.commonpath((self.dirs[kind], folder)) != str(self.dirs[kind]):
            raise ValueError("Saving image outside the output folder is not allowed.")
        folder.mkdir(parents=True, exist_ok=True)
        pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)_")
        counters = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))]
        return folder, subfolder, prefix, max(counters, default=0) + 1

    def save_upload(self, kind: str, subfolder: str, filename: str, data: bytes, overwrite: bool) -> str | None:
        """Store an upload; returns the stored name, or None when the path escapes the folder."""
        base = self.dirs[kind]
        folder = base / os.path.normpath(subfolder)
        path = (folder / filename).resolve()
        if os.path.commonpath((base, path)) != str(base):
            return None
        folder.mkdir(parents=True, exist_ok=True)
        stem, ext = os.path.splitext(filename)
        counter = 1
        while not overwrite and path.exists():
            if _digest(path.read_bytes()) == _digest(data):
                return filename
            filename = f"{stem} ({counter}){ext}"
            path = folder / filename
            counter += 1
        path.write_bytes(data)
        return filename

    def view_path(self, kind: str, subfolder: str | None, filename: str) -> tuple[int, Path | None]:
        """Map a /view query to (http status, path); status 200 means the path exists."""
        if not filename or filename.startswith("/") or ".." in filename:
            return 400, None
        if kind not in self.dirs:
            return 400, None
        base = str(self.dirs[kind])
        folder = base
        if subfolder is not None:
            folder = os.path.join(base, subfolder)
            if os.path.commonpath((os.path.abspath(folder), base)) != base:
                return 403, None
        path = Path(folder) / os.path.basename(filename)
        return (200, path) if path.is_file() else (404, None)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
