"""The gallery's author directory: a page's unknown authors come from auth in one call,
are kept, and a failing auth leaves the page with stored names instead of failing it."""
from __future__ import annotations

from typing import Any

from services.gallery.authors import AuthorDirectory
from shared.errors import ServiceUnavailable


class FakeAuth:
    def __init__(self, known: set[int]) -> None:
        self.known = known
        self.calls: list[list[int]] = []
        self.down = False

    def users(self, user_ids: list[int]) -> dict[int, dict[str, Any]]:
        self.calls.append(list(user_ids))
        if self.down:
            raise ServiceUnavailable("auth is down", code="AUTH_UNAVAILABLE")
        return {user_id: {"id": user_id, "username": f"user{user_id}"} for user_id in user_ids if user_id in self.known}


def test_a_pages_missing_authors_are_read_in_one_call_and_kept():
    auth = FakeAuth(known=set(range(1, 150)))
    directory = AuthorDirectory(auth, ttl_seconds=300)

    found = directory.lookup([3, 1, 3, 2, 999])

    assert sorted(found) == [1, 2, 3] and found[2]["username"] == "user2"
    assert auth.calls == [[3, 1, 2, 999]]
    assert sorted(directory.lookup([1, 2, 999, 4])) == [1, 2, 4]  # 999 is remembered as unknown
    assert auth.calls[1:] == [[4]]
    directory.lookup(range(10, 140))  # 130 missing: auth takes 100 per call
    assert [len(call) for call in auth.calls[2:]] == [100, 30]


def test_authors_are_left_out_while_auth_fails_and_read_again_later(monkeypatch):
    auth = FakeAuth(known={1, 2})
    directory = AuthorDirectory(auth, ttl_seconds=300)
    clock = [1000.0]
    monkeypatch.setattr("services.gallery.authors.time.monotonic", lambda: clock[0])
    auth.down = True

    assert directory.lookup([1, 2]) == {}
    assert directory.lookup([1, 2]) == {} and len(auth.calls) == 1  # the failure is remembered briefly

    auth.down = False
    clock[0] += 31
    assert sorted(directory.lookup([1, 2])) == [1, 2]
