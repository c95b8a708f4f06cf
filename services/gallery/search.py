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
check runs only on what the index found. A word without letters, digits or CJK characters
("%", "!!!") has no terms: only such a search still reads the works in sort order until a
page is full.

Ranking: works where every word is found in the title or tags come first, then the rest;
within each group the chosen sort applies. The gallery's cursor carries the group.
"""
from __future__ import annotations

import re
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
        following = self.term[:-1] + chr(min(ord(self.term[-1]) + 1, 0x10FFFF))
        return and_(WorkTerm.term >= self.term, WorkTerm.term < following)

    def _weight(self, title_or_tag: bool) -> list[ColumnElement[bool]]:
        return [WorkTerm.weight == TITLE_OR_TAG] if title_or_tag else []

    def works(self, title_or_tag: bool = False):
        """The ids of the works holding the term: a range of the index (drives a query)."""
        return select(WorkTerm.work_id).where(self._term(), *self._weight(title_or_tag))

    def held_by_work(self, title_or_tag: bool = False) -> ColumnElement[bool]:
        """The work of the current row holds the term: a lookup per row by work id. A scalar
        subquery, so no optimizer turns it into a join over the whole range."""
        return (select(literal(1)).where(WorkTerm.work_id == Work.id, self._term(), *self._weight(title_or_tag))
                .limit(1).scalar_subquery().is_not(None))

    def count(self, session: Session, cap: int, title_or_tag: bool = False) -> int:
        """How many index rows the term has, counting no further than ``cap``."""
        return session.scalar(select(func.count()).select_from(self.works(title_or_tag).limit(cap).subquery()))

    def work_ids(self, session: Session, title_or_tag: bool = False) -> list[int]:
        return list(dict.fromkeys(session.scalars(self.works(title_or_tag))))


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


@dataclass(frozen=True)
class Search:
    """A gallery search: its words, and the conditions of each ranking group.

    Two plans, both bounded: when some term is rare (fewer than ``DRIVING_LIMIT`` index
    rows), its works are read from the index and the query starts from them, the other terms
    looked up per work; when all are common, the works are read in sort order, each checked
    by lookups, at most ``WALK_ROWS`` per page (a page may then hold fewer works than asked,
    with a cursor to read on)."""

    words: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Search:
        return cls(tuple(dict.fromkeys(normalise(text).split()))[:MAX_SEARCH_WORDS])

    def __bool__(self) -> bool:
        return bool(self.words)

    def probes(self) -> list[Probe]:
        return [probe for word in self.words for probe in word_probes(word)]

    def candidates(self, session: Session, group: int) -> list[int] | None:
        """The works of the group's rarest term (group 1: in a title or tag) when it is rare
        enough to drive the query (they are then named by id, so every database starts from
        them); None to read in sort order."""
        rarest: tuple[int, Probe] | None = None
        for probe in self.probes():
            found = probe.count(session, DRIVING_LIMIT, title_or_tag=group == 1)
            if found < DRIVING_LIMIT and (rarest is None or found < rarest[0]):
                rarest = (found, probe)
            if rarest is not None and rarest[0] == 0:
                return []
        return None if rarest is None else rarest[1].work_ids(session, title_or_tag=group == 1)

    def group_conditions(self, group: int, candidates: list[int] | None = None) -> list[ColumnElement[bool]]:
        """Ranking group 1 (every word in the title or tags) or 2 (the others)."""
        probes = self.probes()
        driven = [Work.id.in_(candidates)] if candidates is not None else []
        if group == 1:
            found = [probe.held_by_work(title_or_tag=True) for probe in probes]
            rank: list[ColumnElement[bool]] = [] if probes else [Work.id.is_(None)]
        else:
            found = [probe.held_by_work() for probe in probes]
            rank = [not_(and_(*[probe.held_by_work(title_or_tag=True) for probe in probes]))] if probes else []
        exact = [Work.search_text.contains(word, autoescape=True) for word in self.words]
        return [*driven, *found, *exact, *rank]
