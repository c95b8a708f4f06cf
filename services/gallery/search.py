"""Search of the public gallery through a term index that works for Chinese and English,
on MariaDB and on SQLite alike (MariaDB 10.11 has no n-gram full-text parser, SQLite's
FTS5 no word segmentation for Chinese, so the index is our own table).

Terms: a work's title, description, prompt and tags are folded (``rules.normalise``) and
cut into terms: every Latin/other word (letters and digits) is a term; a run of CJK
characters gives its overlapping two-character pairs and its last character. Each
``work_terms`` row (term, work, weight) says the work contains the term, with weight 2
when it occurs in the title or a tag, else 1. The rows are rewritten whenever the text
changes (``rules.apply_changes``, saving a work) and go with the work.

A search word matches a work when the work has every term of the word (a Latin term as
a prefix: "cast" finds "castle"; a CJK word by all its pairs, a single CJK character by
the pairs it begins and the last character) and, to stay exact, its folded text contains
the word (``search_text``). So the index narrows by an indexed range per term and the text
check runs only on what the index found, and only for words whose terms do not prove them
(``needs_text_check``: a CJK word of three characters or more, a word with punctuation).
A word without letters, digits or CJK characters ("%", "!!!") has no terms: only such a
search still reads the works in sort order until a page is full.

Ranking: works where every word is found in the title or tags come first, then the rest;
within each group the chosen sort applies. The gallery's cursor carries the group.
"""
from __future__ import annotations

import re
import threading
import time
import unicodedata
from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import ColumnElement, and_, delete, func, insert, literal, not_, select
from sqlalchemy.orm import Session

from services.gallery.models import Work, WorkTerm

MAX_SEARCH_WORDS = 5
MAX_TERM = 32
DRIVING_LIMIT = 1000  # a term with fewer index rows drives the query from the index
WALK_ROWS = 1000      # otherwise, at most this many works are read in sort order per page
TITLE_OR_TAG, ELSEWHERE = 2, 1

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0003ffff"
_TOKENS = re.compile(rf"(?P<cjk>[{_CJK}]+)|(?P<word>[^\W_{_CJK}]+)")


def normalise(text: str) -> str:
    """Fold width, compatibility forms and case, so 'ＡＩ' finds 'ai' and search is case-blind."""
    return unicodedata.normalize("NFKC", text).casefold()


def search_text(title: str, description: str, prompt: str, tags: Iterable[str]) -> str:
    return normalise("\n".join([title, description, prompt, " ".join(tags)]))


def _cjk_terms(run: str) -> list[str]:
    return [run[i:i + 2] for i in range(len(run) - 1)] + [run[-1]]


def terms_in(text: str) -> list[str]:
    """The terms of already folded text, in order (duplicates kept)."""
    terms: list[str] = []
    for match in _TOKENS.finditer(text):
        if match["cjk"]:
            terms += _cjk_terms(match["cjk"])
        else:
            terms.append(match["word"][:MAX_TERM])
    return terms


def work_terms(title: str, description: str, prompt: str, tags: Iterable[str]) -> dict[str, int]:
    """term → weight for a work's text."""
    weights = {term: ELSEWHERE for term in terms_in(normalise(f"{description}\n{prompt}"))}
    weights.update({term: TITLE_OR_TAG for term in terms_in(normalise("\n".join([title, *tags])))})
    return weights


def term_rows(work_id: int, title: str, description: str, prompt: str, tags: Iterable[str]) -> list[dict]:
    return [{"term": term, "work_id": work_id, "weight": weight}
            for term, weight in work_terms(title, description, prompt, tags).items()]


def set_terms(session: Session, work: Work) -> None:
    """Rewrite the work's index rows from its text (flushes, does not commit)."""
    session.execute(delete(WorkTerm).where(WorkTerm.work_id == work.id))
    rows = term_rows(work.id, work.title, work.description, work.prompt, work.tags or [])
    if rows:
        session.execute(insert(WorkTerm), rows)


@dataclass(frozen=True)
class Probe:
    """One indexed lookup: one term, or every term starting with ``term``."""

    term: str
    prefix: bool

    def _term(self) -> ColumnElement[bool]:
        if not self.prefix:
            return WorkTerm.term == self.term
        return and_(WorkTerm.term >= self.term, WorkTerm.term < self._following())

    def _following(self) -> str:
        return self.term[:-1] + chr(min(ord(self.term[-1]) + 1, 0x10FFFF))

    def works(self, weight: int | None = None):
        """The ids of the works holding the term (with ``weight``): a range of the index."""
        return select(WorkTerm.work_id).where(self._term(), *([WorkTerm.weight == weight] if weight else []))

    def count(self, session: Session, cap: int, weight: int | None = None) -> int:
        """How many index rows the term has, counting no further than ``cap``."""
        return session.scalar(select(func.count()).select_from(self.works(weight).limit(cap).subquery()))

    def work_ids(self, session: Session, weight: int | None = None) -> list[int]:
        return list(dict.fromkeys(session.scalars(self.works(weight))))

    def weights_among(self, session: Session, work_ids: list[int]) -> dict[int, int]:
        """work id → the term's weight in it (the highest, for a prefix), for the works among
        ``work_ids`` that hold the term: one lookup per work, in one statement."""
        return dict(session.execute(select(WorkTerm.work_id, func.max(WorkTerm.weight))
                                    .where(self._term(), WorkTerm.work_id.in_(work_ids))
                                    .group_by(WorkTerm.work_id)).all())

    def held_by_work(self, title_or_tag: bool = False) -> ColumnElement[bool]:
        """The work of the current row holds the term: a lookup per row by work id. A scalar
        subquery, so no optimizer turns it into a join over the whole range; the weight is
        compared as ``weight + 0`` so that no database looks it up on ``(weight, term)``,
        the whole range again for each row (SQLite would)."""
        weight = [WorkTerm.weight + 0 == TITLE_OR_TAG] if title_or_tag else []
        return (select(literal(1)).where(WorkTerm.work_id == Work.id, self._term(), *weight)
                .limit(1).scalar_subquery().is_not(None))


def word_probes(word: str) -> list[Probe]:
    """The lookups one folded search word needs."""
    probes = []
    for match in _TOKENS.finditer(word):
        run = match["cjk"]
        if run and len(run) > 1:
            probes += [Probe(pair, prefix=False) for pair in dict.fromkeys(run[i:i + 2] for i in range(len(run) - 1))]
        else:
            probes.append(Probe((run or match["word"])[:MAX_TERM], prefix=True))
    return probes


def needs_text_check(word: str) -> bool:
    """Whether finding the word's terms can still miss the word itself: not when the word is
    one Latin word of at most ``MAX_TERM`` characters (its probe is a prefix of a word of the
    text), one CJK character or one CJK pair."""
    match = _TOKENS.fullmatch(word)
    if match is None:
        return True
    return len(match["cjk"]) > 2 if match["cjk"] else len(word) > MAX_TERM


class TermCounts:
    """Which terms are common (at least ``DRIVING_LIMIT`` index rows), remembered for
    ``seconds``: that only chooses the plan reading in sort order, which finds the same works
    as the other, so a verdict a minute old costs at most the slower plan. Smaller counts are
    counted each time (the zero of a term no work has yet must not outlive the first work
    that has it)."""

    def __init__(self, seconds: float = 60.0, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._common: dict[tuple[Probe, int | None], float] = {}
        self._lock = threading.Lock()

    def count(self, session: Session, probe: Probe, weight: int | None = None) -> int:
        """The term's index rows (with ``weight``), counted up to ``DRIVING_LIMIT``."""
        now = time.monotonic()
        if self._common.get((probe, weight), 0.0) > now:
            return DRIVING_LIMIT
        found = probe.count(session, DRIVING_LIMIT, weight)
        if found >= DRIVING_LIMIT:
            with self._lock:
                if len(self._common) >= self.max_entries:
                    self._common.clear()
                self._common[(probe, weight)] = now + self.seconds
        return found


@dataclass(frozen=True)
class Search:
    """A gallery search: its words, and how to find the works of each ranking group.

    Two plans, both bounded. When the index has fewer than ``DRIVING_LIMIT`` rows that can
    hold a group's works (the rows of its rarest term, or for group 2 the rows outside
    titles and tags), their works are the candidates, the other terms looked up for all of
    them at once (one statement per term, ``matching``). When every term is common, the works
    are read in sort order from the sort's index alone, each checked by a lookup per term
    (``group_conditions``), at most ``WALK_ROWS`` per page (a page may then hold fewer works
    than asked, with a cursor to read on). Either way only the works found are read, and the
    text check (``text_conditions``) runs on them alone."""

    words: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Search:
        return cls(tuple(dict.fromkeys(normalise(text).split()))[:MAX_SEARCH_WORDS])

    def __bool__(self) -> bool:
        return bool(self.words)

    def probes(self) -> list[Probe]:
        return list(dict.fromkeys(probe for word in self.words for probe in word_probes(word)))

    def candidates(self, session: Session, group: int, counts: TermCounts) -> list[int] | None:
        """Ids holding every work of the group when the index has few enough of them (group 1:
        the rarest term in a title or tag; group 2: the rarest term, or the works with a term
        outside titles and tags); None when all are common."""
        probes = self.probes()
        if not probes:  # a search of punctuation: every work is in group 2, found by its text
            return [] if group == 1 else None
        rarest: tuple[int, Probe, int | None] | None = None
        weight = TITLE_OR_TAG if group == 1 else None
        for probe in probes:
            found = counts.count(session, probe, weight)
            if found == 0:
                return []
            if found < DRIVING_LIMIT and (rarest is None or found < rarest[0]):
                rarest = (found, probe, weight)
        if group == 2:
            # A work of group 2 has some term outside its title and tags.
            elsewhere = [counts.count(session, probe, ELSEWHERE) for probe in probes]
            if sum(elsewhere) < min(DRIVING_LIMIT, rarest[0] if rarest else DRIVING_LIMIT):
                return list(dict.fromkeys(work_id for probe, found in zip(probes, elsewhere) if found
                                          for work_id in probe.work_ids(session, ELSEWHERE)))
        return None if rarest is None else rarest[1].work_ids(session, rarest[2])

    def matching(self, session: Session, work_ids: list[int], group: int) -> list[int]:
        """The works of ``work_ids`` (in their order) holding every term, ranked in ``group``:
        1, every word in the title or tags; 2, the others. Without terms (a search of
        punctuation), group 1 is empty and every work is in group 2."""
        probes = self.probes()
        if not probes:
            return [] if group == 1 else list(work_ids)
        remaining, everywhere_title = list(work_ids), None
        for probe in probes:
            if not remaining:
                return []
            weights = probe.weights_among(session, remaining)
            if group == 1:
                remaining = [work_id for work_id in remaining if weights.get(work_id) == TITLE_OR_TAG]
            else:
                remaining = [work_id for work_id in remaining if work_id in weights]
                titled = {work_id for work_id in remaining if weights[work_id] == TITLE_OR_TAG}
                everywhere_title = titled if everywhere_title is None else everywhere_title & titled
        if group == 2:
            remaining = [work_id for work_id in remaining if work_id not in everywhere_title]
        return remaining

    def group_conditions(self, group: int) -> list[ColumnElement[bool]]:
        """Per work, in SQL: the work holds every term and is in ranking ``group``."""
        probes = self.probes()
        if not probes:
            return [] if group == 2 else [Work.id.is_(None)]
        if group == 1:
            return [probe.held_by_work(title_or_tag=True) for probe in probes]
        return [*(probe.held_by_work() for probe in probes),
                not_(and_(*(probe.held_by_work(title_or_tag=True) for probe in probes)))]

    def text_conditions(self) -> list[ColumnElement[bool]]:
        """The folded text holds each word where its terms alone do not prove it."""
        return [Work.search_text.contains(word, autoescape=True) for word in self.words if needs_text_check(word)]
