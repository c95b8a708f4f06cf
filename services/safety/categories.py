"""The categories a term may belong to, with the names shown to users (zh-CN and en).
A refusal names the category, never the matched term."""
from __future__ import annotations

CATEGORIES: dict[str, dict[str, str]] = {
    "politics": {"zh-CN": "涉政有害", "en": "harmful political content"},
    "sexual": {"zh-CN": "色情低俗", "en": "sexual or vulgar content"},
    "violence": {"zh-CN": "暴力血腥", "en": "violence or gore"},
    "terrorism": {"zh-CN": "暴恐极端", "en": "terrorism or extremism"},
    "gambling": {"zh-CN": "赌博", "en": "gambling"},
    "drugs": {"zh-CN": "毒品违禁品", "en": "drugs or contraband"},
    "fraud": {"zh-CN": "诈骗", "en": "fraud"},
    "abuse": {"zh-CN": "辱骂歧视", "en": "abuse or discrimination"},
    "privacy": {"zh-CN": "个人隐私", "en": "personal information"},
    "ads": {"zh-CN": "垃圾广告", "en": "spam or advertising"},
    "other": {"zh-CN": "其他违规", "en": "other prohibited content"},
}
SEVERITIES = ("block", "review")
KINDS = ("term", "pattern")


def language(accept_language: str | None) -> str:
    """``en`` when the caller prefers English, else ``zh-CN`` (the platform is Chinese first)."""
    first = (accept_language or "").split(",")[0].strip().lower()
    return "en" if first.startswith("en") else "zh-CN"


def category_name(category: str, lang: str) -> str:
    return CATEGORIES.get(category, CATEGORIES["other"])[lang]


def rejection_message(category: str, lang: str) -> str:
    name = category_name(category, lang)
    if lang == "en":
        return f"This text contains {name} and cannot be accepted. Please revise it."
    return f"内容包含{name}相关信息，无法提交，请修改后重试。"
