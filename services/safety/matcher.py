"""Normalisation and matching of user text against the term list.

Evasions covered, each undone before matching (terms are normalised the same way):

- full-width and half-width forms, ligatures, circled and other compatibility forms: NFKC;
- letter case: Unicode case folding;
- traditional characters: mapped to simplified ones, character by character, with OpenCC's
  ``TSCharacters`` table (shipped by ``opencc-python-reimplemented``; phrase-level rewrites
  are not applied: they cost milliseconds and matter only for a handful of variants);
- inserted spaces, punctuation, symbols, underscores, zero-width and other format
  characters (U+200B…U+200F, U+2060, U+FEFF, soft hyphen): removed for ``term`` entries.

Not covered: pinyin or pinyin initials, homophones, split characters (e.g. 氵+ 去).

``term`` entries match anywhere in the compact text (everything but letters and digits
removed), through one Aho-Corasick automaton (pyahocorasick). ``pattern`` entries are
regular expressions run on the lighter form (NFKC, case, simplified, format characters
removed, spaces and punctuation kept), so a pattern can use word boundaries.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import ahocorasick
import opencc

_NOT_WORD = re.compile(r"[\W_]+")
_FORMAT = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e"
                     "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]+")
SEVERITY_ORDER = {"review": 1, "block": 2}


def _t2s_table() -> dict[int, str]:
    path = Path(opencc.__file__).parent / "dictionary" / "TSCharacters.txt"
    table: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        source, _, targets = line.partition("\t")
        if len(source) == 1 and targets:
            target = targets.split()[0]
            if target != source:
                table[ord(source)] = target
    return table


T2S = _t2s_table()


def normalise_light(text: str) -> str:
    """NFKC, case folded, simplified, without format (zero-width) characters."""
    return _FORMAT.sub("", unicodedata.normalize("NFKC", text).casefold().translate(T2S))


def normalise(text: str) -> str:
    """The compact form terms are matched in: ``normalise_light`` with only letters and digits left."""
    return _NOT_WORD.sub("", normalise_light(text))


@dataclass(frozen=True)
class Hit:
    term_id: int
    category: str
    severity: str


class Matcher:
    """One version of the term list, compiled. Immutable: a new list builds a new matcher."""

    def __init__(self, entries: Iterable[dict[str, Any]], version: int = 0) -> None:
        self.version = version
        self.automaton = ahocorasick.Automaton()
        self.patterns: list[tuple[re.Pattern[str], Hit]] = []
        words: dict[str, Hit] = {}
        for entry in entries:
            hit = Hit(int(entry["id"]), entry["category"], entry["severity"])
            if entry.get("kind", "term") == "pattern":
                self.patterns.append((re.compile(entry["text"]), hit))
                continue
            key = normalise(entry["text"])
            if not key:
                continue
            known = words.get(key)  # one key may be listed twice: the stricter entry wins
            if known is None or SEVERITY_ORDER[hit.severity] > SEVERITY_ORDER[known.severity]:
                words[key] = hit
        for key, hit in words.items():
            self.automaton.add_word(key, hit)
        self.size = len(words) + len(self.patterns)
        if words:
            self.automaton.make_automaton()
        else:
            self.automaton = None

    def hits(self, text: str) -> list[Hit]:
        """Every distinct entry the text matches, most severe first."""
        if not text:
            return []
        found: dict[int, Hit] = {}
        if self.automaton is not None:
            compact = normalise(text)
            for _end, hit in self.automaton.iter(compact):
                found.setdefault(hit.term_id, hit)
        if self.patterns:
            light = normalise_light(text)
            for pattern, hit in self.patterns:
                if pattern.search(light):
                    found.setdefault(hit.term_id, hit)
        return sorted(found.values(), key=lambda h: (-SEVERITY_ORDER[h.severity], h.term_id))


def validate_pattern(text: str) -> str | None:
    """Why a pattern cannot be used, or None."""
    try:
        re.compile(text)
    except re.error as exc:
        return str(exc)
    return None
