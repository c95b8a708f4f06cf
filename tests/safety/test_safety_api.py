"""The term list through the admin API: every change reaches a caller's filter through Redis
and leaves an audit row; blocks and flags of callers reach the audit log; the log is
searchable and exports as CSV; retention deletes old rows and the withheld images only they kept."""
from __future__ import annotations

import csv
import io
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import update

from services.safety.client import LIST_KEY, VERSION_KEY, ContentFilter, ContentRejected, SafetyClient, record
from services.safety.models import SafetyAudit
from shared.db import utcnow
from shared.storage import content_key
from tests.conftest import TEST_SERVICE_TOKEN, serve


def add_term(admin, text: str, **fields):
    response = admin.post("/api/admin/safety/terms", json={"text": text, "category": "gambling", **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["data"]["term"]


def audit(admin, **query):
    response = admin.get("/api/admin/safety/audit", query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]["items"]


def test_a_new_term_reaches_a_callers_filter_and_a_removed_one_leaves_it(admin, content_filter, marker):
    assert content_filter.matcher().hits(f"买{marker}") == []
    term = add_term(admin, marker)
    assert [h.term_id for h in content_filter.matcher().hits(f"买 {marker.upper()}")] == [term["id"]]
    assert admin.delete(f"/api/admin/safety/terms/{term['id']}").status_code == 200
    assert content_filter.matcher().hits(f"买{marker}") == []


def test_list_changes_are_audited_with_who_what_and_category(admin, marker):
    term = add_term(admin, marker, severity="review")
    admin.put(f"/api/admin/safety/terms/{term['id']}", json={"severity": "block", "category": "fraud"})
    admin.delete(f"/api/admin/safety/terms/{term['id']}")
    rows = audit(admin, subject=f"term:{term['id']}", q=marker)
    assert [r["action"] for r in rows] == ["term_removed", "term_updated", "term_added"]
    assert all(r["actorName"] == "moderator1" and r["excerpt"] == marker for r in rows)
    assert rows[1]["detail"]["before"] == {"category": "gambling", "severity": "review"}
    assert rows[1]["detail"]["after"] == {"category": "fraud", "severity": "block"}


def test_a_block_raises_content_rejected_naming_the_category_not_the_term(admin, content_filter, marker, app):
    add_term(admin, marker, category="drugs")
    with app.test_request_context(headers={"Accept-Language": "en-US,en;q=0.9"}):
        with pytest.raises(ContentRejected) as caught:
            content_filter.check({"prompt": f"a photo of {marker}"}, source="render", actor_id=5, actor_name="eve",
                                 subject="generate")
    assert caught.value.status == 422 and caught.value.code == "CONTENT_REJECTED"
    assert caught.value.details == {"field": "prompt", "category": "drugs", "categoryName": "drugs or contraband"}
    assert marker not in caught.value.message
    with pytest.raises(ContentRejected) as chinese:
        content_filter.check({"prompt": marker}, source="render")
    assert "毒品" in chinese.value.message
    [row] = audit(admin, action="blocked", q=f"a photo of {marker}")
    assert (row["source"], row["actorId"], row["actorName"], row["category"], row["severity"]) == (
        "render.prompt", 5, "eve", "drugs", "block")


def test_a_review_match_is_flagged_and_recorded(admin, content_filter, marker):
    add_term(admin, marker, severity="review", category="ads")
    verdict = content_filter.check({"title": "plain", "description": f"加微信 {marker}"}, source="gallery",
                                   actor_id=9, subject="work:1")
    assert verdict.needs_review and verdict.categories == ["ads"]
    [row] = audit(admin, action="flagged", subject="work:1", q=marker)
    assert (row["source"], row["severity"], row["category"]) == ("gallery.description", "review", "ads")


def test_duplicates_bad_patterns_and_bulk_import(admin, marker):
    add_term(admin, marker)
    again = admin.post("/api/admin/safety/terms", json={"text": f" {marker.upper()} ", "category": "fraud"})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "TERM_EXISTS"
    bad = admin.post("/api/admin/safety/terms", json={"text": "([", "kind": "pattern", "category": "fraud"})
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "INVALID_PATTERN"
    empty = admin.post("/api/admin/safety/terms", json={"text": "!!!", "category": "fraud"})
    assert empty.status_code == 422 and empty.get_json()["error"]["code"] == "EMPTY_TERM"
    items = [{"text": f"{marker}{i}", "category": "ads", "severity": "review"} for i in range(50)]
    response = admin.post("/api/admin/safety/terms/bulk", json={"items": items + [{"text": marker, "category": "ads"}]})
    assert response.get_json()["data"]["added"] == 50 and response.get_json()["data"]["skipped"] == 1
    listed = admin.get("/api/admin/safety/terms", query_string={"q": marker, "pageSize": 200}).get_json()["data"]
    assert listed["total"] == 51


def test_a_pattern_with_nested_quantifiers_is_refused_wherever_it_is_written(admin, marker):
    """``(a+)+$`` on a long near miss would hold a process for minutes: refused when written."""
    unsafe = {"text": r"(a+)+$", "kind": "pattern", "category": "fraud"}
    term = add_term(admin, rf"\b{marker}\s+x\b", kind="pattern")
    for response in (admin.post("/api/admin/safety/terms", json=unsafe),
                     admin.post("/api/admin/safety/terms/bulk", json={"items": [{**unsafe, "text": marker}, unsafe]}),
                     admin.put(f"/api/admin/safety/terms/{term['id']}", json={"text": r"(\w+\s?)*" + marker})):
        body = response.get_json()
        assert response.status_code == 422 and body["success"] is False
        assert body["error"]["code"] == "UNSAFE_PATTERN" and body["error"]["details"] == {"text": ["Nested quantifiers."]}
    listed = admin.get("/api/admin/safety/terms", query_string={"q": marker}).get_json()["data"]["items"]
    assert [(item["id"], item["text"]) for item in listed] == [(term["id"], term["text"])], "nothing written"
    assert add_term(admin, rf"(?>{marker}+)+", kind="pattern")["kind"] == "pattern", "atomic groups are fine"


def test_the_audit_log_exports_as_csv(admin, marker):
    add_term(admin, f"{marker}，含逗号")
    response = admin.get("/api/admin/safety/audit/export", query_string={"q": marker})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text[1:])))
    assert [(r["action"], r["excerpt"], r["actorName"]) for r in rows] == [("term_added", f"{marker}，含逗号", "moderator1")]


def test_retention_deletes_rows_older_than_the_setting(admin, app, marker):
    add_term(admin, marker)
    db = app.extensions["db"]
    with db.transaction() as session:
        session.execute(update(SafetyAudit).where(SafetyAudit.excerpt == marker)
                        .values(created_at=utcnow() - timedelta(days=400)))
    assert app.extensions["safety_audit"].prune() >= 1
    assert audit(admin, q=marker) == []


def _age(app, **where) -> None:
    with app.extensions["db"].transaction() as session:
        session.execute(update(SafetyAudit).filter_by(**where).values(created_at=utcnow() - timedelta(days=400)))


def test_a_withheld_image_is_shown_to_moderators_and_pruned_with_the_last_row_naming_it(admin, app, marker):
    storage = app.extensions["safety_audit"].storage
    data = f"pixels of {marker}".encode()
    key = storage.put(content_key(data, "png", "quarantine"), data)
    redis = app.extensions["redis"]
    for subject in ("job:first", "job:again"):  # the same image flagged twice: one file, two rows
        record(redis, "output_flagged", "render.output", actor_id=3, subject=subject, excerpt=marker, media_key=key)
    record(redis, "output_flagged", "render.output", subject="job:elsewhere", excerpt=marker,
           media_key=content_key(data, "png", "images"))  # only quarantine/ keys are kept on a row

    rows = audit(admin, q=marker)
    assert [(r["subject"], r["mediaKey"]) for r in rows] == [
        ("job:elsewhere", None), ("job:again", key), ("job:first", key)]
    assert rows[0]["mediaUrl"] is None
    url = urlsplit(rows[1]["mediaUrl"])
    assert url.path == f"/media/{key}"
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    assert 0 < storage.signer.verify(key, query["exp"], query["sig"]) <= 600, "a link that lives minutes"
    exported = admin.get("/api/admin/safety/audit/export", query_string={"q": marker}).get_data(as_text=True)
    assert [r["mediaKey"] for r in csv.DictReader(io.StringIO(exported[1:]))] == [key, key, ""]

    _age(app, subject="job:first", excerpt=marker)
    assert app.extensions["safety_audit"].prune() >= 1
    assert storage.exists(key), "another row still names it"
    _age(app, subject="job:again", excerpt=marker)
    assert app.extensions["safety_audit"].prune() >= 1
    assert not storage.exists(key)
    assert [r["subject"] for r in audit(admin, q=marker)] == ["job:elsewhere"]


def test_only_administrators_reach_the_list_and_the_log(user):
    for method, path in (("GET", "/api/admin/safety/terms"), ("GET", "/api/admin/safety/audit"),
                         ("POST", "/api/admin/safety/terms"), ("GET", "/api/admin/safety/audit/export")):
        assert user.request(method, path, json={}).status_code == 403


def test_the_filter_keeps_its_last_list_when_redis_fails(admin, content_filter, marker):
    add_term(admin, marker)
    assert content_filter.matcher().hits(marker)

    class Broken:
        def get(self, *_):
            import redis
            raise redis.ConnectionError("down")

    content_filter.redis = Broken()
    assert content_filter.matcher().hits(marker)


def test_a_filter_finds_the_list_through_the_service_when_redis_lost_it(admin, app, marker):
    add_term(admin, marker)
    redis = app.extensions["redis"]
    redis.delete(LIST_KEY, VERSION_KEY)  # as after a flush
    running = serve(app)
    try:
        fresh = ContentFilter(redis, SafetyClient(running.url, TEST_SERVICE_TOKEN), refresh_seconds=0)
        assert fresh.matcher().hits(marker)
    finally:
        running.stop()
    assert redis.get(VERSION_KEY) is not None  # the service wrote it back
