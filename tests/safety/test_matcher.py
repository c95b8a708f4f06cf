"""The normalisations the filter claims, one table row per evasion: the listed term is
found however it is disguised, and nearby innocent text is not."""
from __future__ import annotations

import pytest

from services.safety.matcher import Matcher, nested_quantifier, normalise

TERMS = [
    {"id": 1, "text": "法轮功", "category": "politics", "severity": "block"},
    {"id": 2, "text": "代开发票", "category": "fraud", "severity": "review"},
    {"id": 3, "text": "Porn", "category": "sexual", "severity": "block"},
    {"id": 4, "text": "賭場", "category": "gambling", "severity": "block"},  # listed in traditional form
    {"id": 5, "kind": "pattern", "text": r"\bkill\s+him\b", "category": "violence", "severity": "review"},
    {"id": 6, "text": "冰毒", "category": "drugs", "severity": "review"},
    {"id": 7, "text": "冰毒", "category": "drugs", "severity": "block"},  # listed twice: the stricter wins
    {"id": 8, "text": "ＶＰＮ翻墙", "category": "politics", "severity": "review"},  # listed in full-width form
]

EVASIONS = [
    # (normalisation, text, expected term id)
    ("plain", "我在练法轮功", 1),
    ("full-width Latin", "ｐｏｒｎ pictures", 3),
    ("half-width / full-width digits and letters mixed", "ＰoＲｎ", 3),
    ("letter case", "PORN", 3),
    ("traditional to simplified", "法輪功", 1),
    ("traditional to simplified, mixed", "代開發票", 2),
    ("term listed traditional, text simplified", "去赌场玩", 4),
    ("inserted spaces", "法 轮 功", 1),
    ("ideographic spaces", "法\u3000轮\u3000功", 1),
    ("inserted punctuation", "法.轮-功", 1),
    ("full-width punctuation", "法，轮。功！", 1),
    ("symbols and emoji", "法★轮🙂功", 1),
    ("underscores", "p_o_r_n", 3),
    ("zero-width space", "法\u200b轮\u200b功", 1),
    ("zero-width joiner and BOM", "p\u200do\ufeffr\u2060n", 3),
    ("soft hyphen", "por\u00adn", 3),
    ("circled and compatibility forms", "ⓟⓞⓡⓝ", 3),
    ("accents and combining marks", "pörn and p\u0301orn", 3),
    ("mathematical letters", "𝐩𝐨𝐫𝐧", 3),
    ("everything at once", "法\u200b 輪．功", 1),
    ("pattern with word boundaries", "I will KILL  him", 5),
    ("pattern after full-width", "ｋｉｌｌ ｈｉｍ", 5),
    ("duplicate entry: block wins", "卖冰毒", 7),
    ("term listed full-width, text half-width", "vpn翻墙教程", 8),
    ("half-width ideographic punctuation", "法｡轮､功", 1),
]

INNOCENT = ["法律功课", "porcelain vase", "skill himself", "一张发票", "lorem ipsum 代码开发"]


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher(TERMS, version=1)


@pytest.mark.parametrize("case,text,term_id", EVASIONS, ids=[row[0] for row in EVASIONS])
def test_each_evasion_is_seen_through(matcher, case, text, term_id):
    assert term_id in [hit.term_id for hit in matcher.hits(text)], case


@pytest.mark.parametrize("text", INNOCENT)
def test_innocent_text_matches_nothing(matcher, text):
    assert matcher.hits(text) == []


def test_the_most_severe_hit_comes_first(matcher):
    hits = matcher.hits("代开发票 和 法轮功")
    assert [h.severity for h in hits] == ["block", "review"]
    assert hits[0].category == "politics"


def test_normalised_form():
    assert normalise("Ｆａｌｕｎ 法\u200b輪-功!") == "falun法轮功"


def test_an_empty_list_matches_nothing():
    assert Matcher([]).hits("anything at all") == []


# (pattern, whether it is refused): a repeat may not hold a part of varying length it can backtrack into.
PATTERNS = [
    (r"(a+)+$", True),
    (r"(\w+\s?)*", True),
    (r"([a-z]+)*@", True),
    (r"(?:a*){2}", True),
    (r"(x?){30}", True),
    (r"(?:a+?)+", True),  # lazy repeats backtrack too
    (r"(\d{3}-?){2}", True),  # harmless here, but refused like any nesting (rewrite: \d{3}-?\d{3}-?)
    (r"(?:x(?:y+z)?)+", True),  # nested inside an optional part
    (r"(?:a|(b+))+", True),  # nested inside one alternative
    (r"\bkill\s+him\b", False),
    (r"(?:foo|bar)+", False),
    (r"(?:ab)+c", False),
    (r"(?:a{2}){3,}", False),  # fixed counts inside a repeat never divide the text differently
    (r"a+b+c*", False),
    (r"(?>a+)+", False),  # an atomic group never backtracks
    (r"(?:a++)+", False),  # nor does a possessive repeat
    (r"(?:x(?=a*))+", False),  # nor a lookahead
]


@pytest.mark.parametrize("pattern,refused", PATTERNS, ids=[p for p, _ in PATTERNS])
def test_patterns_with_nested_quantifiers_are_told_apart(pattern, refused):
    assert nested_quantifier(pattern) is refused


def test_a_listed_pattern_with_nested_quantifiers_is_not_run():
    """One written before such patterns were refused: the process skips it rather than risk blocking."""
    matcher = Matcher([{"id": 1, "kind": "pattern", "text": r"(a+)+$", "category": "other", "severity": "block"},
                       {"id": 2, "kind": "pattern", "text": r"\bkill\s+him\b", "category": "violence",
                        "severity": "review"}])
    assert [hit.term_id for _, hit in matcher.patterns] == [2]
    assert [h.term_id for h in matcher.hits("aaaa! kill him")] == [2]
