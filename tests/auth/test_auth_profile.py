"""The profile, password change and the avatar."""
from __future__ import annotations

import pytest
from PIL import Image

from services.auth.avatars import MAX_AVATAR_BYTES
from tests.auth.helpers import multipart, picture, upload


def test_profile_fields_round_trip(make_account):
    account = make_account()
    changes = {"bio": "I draw cats \U0001f431\nand dogs.", "website": "https://cats.example.com/me",
               "location": "Zürich", "privacy": {"newWorksPublic": False, "profileVisible": False}}
    updated = account.call("PUT", "/api/users/profile", json=changes)
    assert updated.status_code == 200, updated.json
    user = account.call("GET", "/api/users/profile").json["data"]["user"]
    assert {key: user[key] for key in changes} == changes
    assert user["avatarUrl"] is None and user["isActive"] is True
    cleared = account.call("PUT", "/api/users/profile", json={"website": "", "privacy": {"profileVisible": True}})
    assert cleared.json["data"]["user"]["website"] == ""
    assert cleared.json["data"]["user"]["privacy"] == {"newWorksPublic": False, "profileVisible": True}


def test_display_name_round_trips_and_clears(make_account):
    """A Chinese display name is stored as typed (NFC, trimmed), shown in the profile and the
    session's user record, and cleared by a blank one; the login name is untouched."""
    account = make_account()
    named = account.call("PUT", "/api/users/profile", json={"displayName": " 小明创作 "})
    assert named.status_code == 200, named.json
    assert named.json["data"]["user"]["displayName"] == "小明创作"
    user = account.call("GET", "/api/users/profile").json["data"]["user"]
    assert (user["displayName"], user["username"]) == ("小明创作", account.username)
    decomposed = account.call("PUT", "/api/users/profile", json={"displayName": "Zoe\u0308"}).json["data"]["user"]
    assert decomposed["displayName"] == "Zo\u00eb"
    login = account.client.post("/api/users/login", headers=account.service_headers,
                                json={"username": account.username, "password": account.password})
    assert login.json["data"]["user"]["displayName"] == "Zo\u00eb"
    for blank in ("", "   ", None):
        cleared = account.call("PUT", "/api/users/profile", json={"displayName": blank})
        assert cleared.json["data"]["user"]["displayName"] is None
        account.call("PUT", "/api/users/profile", json={"displayName": "x"})


def test_username_and_email_changes(make_account):
    account, other = make_account(), make_account()
    renamed = account.call("PUT", "/api/users/profile",
                           json={"username": account.username.upper(), "email": f"NEW.{account.email.upper()}"})
    assert renamed.status_code == 200
    user = renamed.json["data"]["user"]
    assert (user["username"], user["email"]) == (account.username.upper(), f"new.{account.email}")
    taken_name = account.call("PUT", "/api/users/profile", json={"username": other.username.upper()})
    assert (taken_name.status_code, taken_name.json["error"]["code"]) == (409, "USERNAME_TAKEN")
    taken_mail = account.call("PUT", "/api/users/profile", json={"email": other.email})
    assert (taken_mail.status_code, taken_mail.json["error"]["code"]) == (409, "EMAIL_TAKEN")
    # The new name signs in; nothing of the refused changes was written.
    assert account.client.post("/api/users/login", headers=account.service_headers, json={
        "username": f"new.{account.email}", "password": account.password}).status_code == 200


@pytest.mark.parametrize("body, field", [
    ({}, "_schema"),
    ({"bio": "x" * 201}, "bio"),
    ({"bio": "nul\x00byte"}, "bio"),
    ({"bio": 5}, "bio"),
    ({"website": "javascript:alert(1)"}, "website"),
    ({"website": "not a url"}, "website"),
    ({"website": "https://" + "a" * 200 + ".com"}, "website"),
    ({"location": "x" * 101}, "location"),
    ({"location": "line\nbreak"}, "location"),
    ({"username": "ab"}, "username"),
    ({"username": "\uff41\uff42\uff43"}, "username"),
    ({"email": "nope"}, "email"),
    ({"privacy": {"profileVisible": "false"}}, "privacy"),
    ({"privacy": {"showOnline": True}}, "privacy"),
    ({"privacy": True}, "privacy"),
    ({"role": "admin"}, "role"),
    ({"isActive": False}, "isActive"),
    ({"displayName": "x" * 31}, "displayName"),
    ({"displayName": "zero\u200bwidth"}, "displayName"),
    ({"displayName": "\x07bell"}, "displayName"),
])
def test_bad_profile_updates_are_422(make_account, body, field):
    account = make_account()
    response = account.call("PUT", "/api/users/profile", json=body)
    assert response.status_code == 422, response.json
    assert list(response.json["error"]["details"]) == [field]
    assert account.call("GET", "/api/users/profile").json["data"]["user"]["bio"] == ""


def test_password_change_ends_every_other_session(make_account, client, service_headers):
    account = make_account()
    laptop = account.login()
    changed = account.call("PUT", "/api/users/password",
                           json={"currentPassword": account.password, "newPassword": "brandnew42"})
    assert changed.status_code == 200, changed.json
    fresh = changed.json["data"]
    # The old access token of this session and the other session are dead...
    assert account.call("GET", "/api/users/profile").json["error"]["code"] == "TOKEN_REVOKED"
    laptop_headers = {**service_headers, "Authorization": f"Bearer {laptop['accessToken']}"}
    assert client.get("/api/users/profile", headers=laptop_headers).status_code == 401
    assert client.post("/api/users/token/refresh", headers=service_headers,
                       json={"refreshToken": laptop["refreshToken"]}).status_code == 401
    # ...the caller carries on with the fresh pair, which rotates normally.
    account.use(fresh)
    assert account.call("GET", "/api/users/profile").status_code == 200
    assert client.post("/api/users/token/refresh", headers=service_headers,
                       json={"refreshToken": fresh["refreshToken"]}).status_code == 200
    old = client.post("/api/users/login", headers=service_headers,
                      json={"username": account.username, "password": account.password})
    assert old.status_code == 401
    new = client.post("/api/users/login", headers=service_headers,
                      json={"username": account.username, "password": "brandnew42"})
    assert new.status_code == 200


def test_password_change_needs_the_current_password(make_account):
    """A wrong current password is an error on that field, so the form can show it there."""
    account = make_account()
    wrong = account.call("PUT", "/api/users/password", json={"currentPassword": "nottheone1", "newPassword": "brandnew42"})
    assert (wrong.status_code, wrong.json["error"]["code"]) == (422, "INVALID_PASSWORD")
    assert list(wrong.json["error"]["details"]) == ["currentPassword"]
    weak = account.call("PUT", "/api/users/password", json={"currentPassword": account.password, "newPassword": "short"})
    assert weak.status_code == 422
    assert account.call("GET", "/api/users/profile").status_code == 200  # nothing was revoked


@pytest.mark.parametrize("fmt, mode", [("PNG", "RGBA"), ("JPEG", "RGB"), ("WEBP", "RGB")])
def test_avatar_is_reencoded_to_a_square_webp(make_account, auth_settings, fmt, mode):
    account = make_account()
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # camera maker
    exif[0x0112] = 6  # rotate 90 degrees
    response = upload(account, picture(fmt, mode=mode, exif=exif.tobytes()))
    assert response.status_code == 200, response.json
    url = response.json["data"]["avatarUrl"]
    assert url.startswith("/media/avatars/") and url.endswith(".webp")
    stored = auth_settings.media_dir / url.removeprefix("/media/")
    with Image.open(stored) as avatar:
        assert (avatar.format, avatar.size) == ("WEBP", (256, 256))
        assert not avatar.getexif() and "exif" not in avatar.info
    assert account.call("GET", "/api/users/profile").json["data"]["user"]["avatarUrl"] == url


def test_new_avatar_removes_the_old_file_unless_shared(make_account, auth_settings):
    first, second = make_account(), make_account()
    red = picture("PNG", size=(300, 300), color=(200, 0, 0))
    blue = picture("JPEG", size=(500, 300), color=(0, 0, 200))
    old_url = upload(first, red).json["data"]["avatarUrl"]
    assert upload(second, red).json["data"]["avatarUrl"] == old_url  # same content, same file
    new_url = upload(first, blue).json["data"]["avatarUrl"]
    assert (auth_settings.media_dir / old_url.removeprefix("/media/")).exists()  # second still uses it
    upload(second, blue)
    assert not (auth_settings.media_dir / old_url.removeprefix("/media/")).exists()
    assert (auth_settings.media_dir / new_url.removeprefix("/media/")).exists()


def _bomb(width: int, height: int) -> bytes:
    """A tiny PNG declaring a huge canvas (1-bit, compresses to almost nothing)."""
    return picture("PNG", size=(width, height), mode="1", color=0)


BAD_AVATARS = {
    "text": (lambda: b"hello, I am not a picture", 422, "INVALID_IMAGE"),
    "empty": (lambda: b"", 422, "INVALID_IMAGE"),
    "gif": (lambda: picture("GIF"), 422, "INVALID_IMAGE"),
    "svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg"/>', 422, "INVALID_IMAGE"),
    "truncated png": (lambda: picture("PNG", size=(800, 800))[:-3000], 422, "INVALID_IMAGE"),
    "truncated jpeg": (lambda: picture("JPEG", size=(800, 800))[:600], 422, "INVALID_IMAGE"),
    "over our pixel limit": (lambda: _bomb(7000, 7000), 422, "INVALID_IMAGE"),
    "over Pillow's warning limit": (lambda: _bomb(10000, 10000), 422, "INVALID_IMAGE"),
    "over Pillow's error limit": (lambda: _bomb(20000, 20000), 422, "INVALID_IMAGE"),
    "2 MB + 1 byte": (lambda: b"\x89PNG" + b"\x00" * (MAX_AVATAR_BYTES - 3), 413, "AVATAR_TOO_LARGE"),
}


@pytest.mark.parametrize("name", list(BAD_AVATARS))
def test_bad_avatars_are_refused(make_account, name):
    make_data, status, code = BAD_AVATARS[name]
    account = make_account()
    response = upload(account, make_data())
    assert (response.status_code, response.json["error"]["code"]) == (status, code), name
    assert account.call("GET", "/api/users/profile").json["data"]["user"]["avatarUrl"] is None


def test_bodies_over_the_request_limit_are_refused_unread(make_account):
    response = upload(make_account(), b"\x00" * (MAX_AVATAR_BYTES + 200_000))
    assert (response.status_code, response.json["error"]["code"]) == (413, "PAYLOAD_TOO_LARGE")


def test_avatar_upload_shape_errors(make_account):
    account = make_account()
    wrong_field = upload(account, picture("PNG"), field="picture")
    assert wrong_field.status_code == 422
    assert set(wrong_field.json["error"]["details"]) == {"picture"}
    as_json = account.call("POST", "/api/users/avatar", json={"avatar": "data:image/png;base64,AAAA"})
    assert as_json.status_code == 422
    anonymous = account.client.post("/api/users/avatar", headers=account.service_headers,
                                    data=multipart("avatar", picture("PNG")),
                                    content_type="multipart/form-data; boundary=b0undary")
    assert anonymous.status_code == 401
