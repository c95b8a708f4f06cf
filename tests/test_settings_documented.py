"""The README's settings tables and the code agree: every documented setting is read by some
process, and every setting a process reads is documented."""
from __future__ import annotations

import re
from pathlib import Path

from shared.config import PROJECT_ROOT

CODE_ROOTS = ("services", "shared", "deploy")
# `NAME` in the first cell of a README table row.
TABLE_ROW = re.compile(r"^\|([^|]*)\|", re.M)
SETTING = re.compile(r"`([A-Z][A-Z0-9_]{2,})`")
# How the code reads a setting: a typed reader with the environment, or the environment itself.
READ = re.compile(r"""(?:\b(?:env_\w+|_\w+)\(\s*env,\s*|\benv(?:iron)?\.get\(\s*|\benviron\[\s*)["']([A-Z][A-Z0-9_]{2,})["']""")


def _documented() -> set[str]:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    return {name for cell in TABLE_ROW.findall(readme) for name in SETTING.findall(cell)}


def _code() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for root in CODE_ROOTS
            for path in (PROJECT_ROOT / root).rglob("*.py")}


def test_every_documented_setting_is_read_by_the_code():
    sources = _code()
    unread = sorted(name for name in _documented()
                    if not any(f'"{name}"' in text for text in sources.values()))
    assert not unread, f"documented in README.md but read nowhere: {unread}"


def test_every_setting_the_code_reads_is_documented():
    read = {name for text in _code().values() for name in READ.findall(text)}
    assert read, "the pattern finds no setting at all"
    undocumented = sorted(read - _documented())
    assert not undocumented, f"read by the code but missing from README.md's settings tables: {undocumented}"
