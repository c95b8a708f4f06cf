"""Normalisation and matching of user text against the term list.

Evasions covered, each undone before matching (terms are normalised the same way):

- full-width and half-width forms, ligatures, circled, mathematical and other compatibility
  forms: each character's compatibility decomposition (NFKC's per-character part);
- accents and other combining marks: dropped (``pörn`` is ``porn``);
- letter case: Unicode case folding;
- traditional characters: mapped to simplified ones, character by character, with OpenCC's
  ``TSCharacters`` table (shipped by ``opencc-python-reimplemented``; phrase-level rewrites
  are not applied: they cost milliseconds and matter only for a handful of variants);
- inserted spaces, punctuation, symbols, underscores, zero-width and other format
  characters (U+200B…U+200F, U+2060, U+FEFF, soft hyphen): removed for ``term`` entries.

Not covered: pinyin or pinyin initials, homophones, split characters (e.g. 氵+ 去).

``term`` entries match anywhere in the compact text (everything but letters and digits
removed), through one Aho-Corasick automaton (``ahocorasick_rs``, in Rust: pyahocorasick's
trie scans a node's children one by one, which for a root with thousands of CJK children
cost 6 ms per 2,000 characters; this one takes 25 µs). ``pattern`` entries are
regular expressions run on the lighter form (folded, format characters removed, spaces and
punctuation kept), so a pattern can use word boundaries. The folding table is built once per
process at import (about 0.15 s).
"""
from __future__ import annotations

import logging
import re
import re._constants as sre  # the parser re.compile itself runs: read to refuse unsafe patterns
import re._parser as sre_parse
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import ahocorasick_rs
import opencc

_NOT_WORD = re.compile(r"[\W_]+")
log = logging.getLogger(__name__)
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


# Beyond the BMP, only these blocks have compatibility forms worth folding: mathematical
# alphanumerics, enclosed alphanumerics, CJK compatibility ideographs.
_SUPPLEMENTARY = ((0x1D400, 0x1D800), (0x1F100, 0x1F200), (0x2F800, 0x2FA20))


def _fold_table() -> dict[int, str | None]:
    """Every character's folded form in one table: compatibility decomposition (NFKD, which
    is NFKC's per-character part) without combining marks, case folded, simplified; format
    characters deleted. One ``str.translate`` pass then does what NFKC + casefold + OpenCC
    would do in three (a quarter of the time for 2,000 characters)."""
    table: dict[int, str | None] = {}
    codes = [*range(0xD800), *range(0xE000, 0x10000), *(c for lo, hi in _SUPPLEMENTARY for c in range(lo, hi))]
    for code in codes:
        char = chr(code)
        folded = unicodedata.normalize("NFKD", char)
        if len(folded) > 1 or folded != char:
            folded = unicodedata.normalize("NFC", "".join(c for c in folded if not unicodedata.combining(c)))
        folded = folded.casefold().translate(T2S)
        if folded != char:
            table[code] = folded
    for char in _FORMAT_CHARS:
        table[ord(char)] = None
    return table


_FORMAT_CHARS = ("\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b"
                 "\u202c\u202d\u202e" + "".join(chr(c) for c in range(0x2060, 0x2070)) + "\u3164"
                 + "".join(chr(c) for c in range(0xFE00, 0xFE10)) + "\ufeff\uffa0")
FOLD = _fold_table()


def normalise_light(text: str) -> str:
    """Folded (see ``_fold_table``), spaces and punctuation kept: what patterns see."""
    return text.translate(FOLD)


def normalise(text: str) -> str:
    """The compact form terms are matched in: folded, only letters and digits left."""
    return _NOT_WORD.sub("", text.translate(FOLD))


@dataclass(frozen=True)
class Hit:
    term_id: int
    category: str
    severity: str


class Matcher:
    """One version of the term list, compiled. Immutable: a new list builds a new matcher."""

    def __init__(self, entries: Iterable[dict[str, Any]], version: int = 0) -> None:
        self.version = version
        self.patterns: list[tuple[re.Pattern[str], Hit]] = []
        words: dict[str, Hit] = {}
        for entry in entries:
            hit = Hit(int(entry["id"]), entry["category"], entry["severity"])
            if entry.get("kind", "term") == "pattern":
                if nested_quantifier(entry["text"]):  # written before such patterns were refused
                    log.error("pattern entry %s skipped: nested quantifiers could block the process", hit.term_id)
                else:
                    self.patterns.append((re.compile(entry["text"]), hit))
                continue
            key = normalise(entry["text"])
            if not key:
                continue
            known = words.get(key)  # one key may be listed twice: the stricter entry wins
            if known is None or SEVERITY_ORDER[hit.severity] > SEVERITY_ORDER[known.severity]:
                words[key] = hit
        self.keys = list(words)
        self.key_hits = list(words.values())
        self.size = len(words) + len(self.patterns)
        self.automaton = ahocorasick_rs.AhoCorasick(self.keys) if words else None

    def hits(self, text: str) -> list[Hit]:
        """Every distinct entry the text matches, most severe first."""
        if not text:
            return []
        found: dict[int, Hit] = {}
        if self.automaton is not None:
            for index, _start, _end in self.automaton.find_matches_as_indexes(normalise(text), overlapping=True):
                hit = self.key_hits[index]
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


def nested_quantifier(text: str) -> bool:
    """Whether a valid pattern repeats a part that holds a quantifier of its own (see below)."""
    return _nested_quantifier(sre_parse.parse(text))


# Python's ``re`` backtracks without a time limit and holds the GIL while it does, so a pattern like
# ``(a+)+$`` on a long near miss blocks the whole process. Such patterns are refused when an entry
# is written: a repeat (``*``, ``+``, ``{m,n}`` with n > 1, lazy too) may not hold a part that can
# match a varying length (another ``*``, ``+``, ``?``, ``{m,n}``), since the engine then tries every
# way of dividing the text between them. An atomic group ``(?>…)``, a possessive ``a++`` or a
# lookaround inside a repeat never backtracks, so it is allowed. Not detected: alternatives that
# overlap inside a repeat (``(a|a)+``) and backreferences.
_BACKTRACKING = (sre.MAX_REPEAT, sre.MIN_REPEAT)
_REPEATS = (*_BACKTRACKING, sre.POSSESSIVE_REPEAT)
_OPAQUE = (sre.ATOMIC_GROUP, sre.POSSESSIVE_REPEAT, sre.ASSERT, sre.ASSERT_NOT)


def _parts(op: Any, av: Any) -> list[Any]:
    """The sub-patterns of one parsed node."""
    if op in _REPEATS:
        return [av[2]]
    if op is sre.SUBPATTERN:
        return [av[3]]
    if op is sre.BRANCH:
        return list(av[1])
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return [av[1]]
    if op is sre.ATOMIC_GROUP:
        return [av]
    if op is sre.GROUPREF_EXISTS:
        return [part for part in av[1:] if part is not None]
    return []


def _varies(items: Any) -> bool:
    """Whether a part holds a backtracking quantifier of varying count (outside atomic parts)."""
    for op, av in items:
        if op in _BACKTRACKING and av[0] != av[1]:
            return True
        if op not in _OPAQUE and any(_varies(part) for part in _parts(op, av)):
            return True
    return False


def _nested_quantifier(items: Any) -> bool:
    for op, av in items:
        if op in _REPEATS and av[1] > 1 and _varies(av[2]):
            return True
        if any(_nested_quantifier(part) for part in _parts(op, av)):
            return True
    return False
