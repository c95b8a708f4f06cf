"""Input schemas of the auth API. Unknown fields are rejected (marshmallow 4 RAISE)."""
from __future__ import annotations

import re
import unicodedata
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate, validates_schema

from shared.db import MAX_ID
from shared.web import CommaSeparated
from shared.tokens import SCOPES

ROLES = ("user", "admin")

# Control characters are never part of a name, e-mail, URL or place; bios may break lines.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_EXCEPT_NEWLINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _single_line(value: str) -> None:
    if _CONTROL.search(value):
        raise ValidationError("Control characters are not allowed.")


def _no_nul(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("NUL characters are not allowed.")


def _multi_line(value: str) -> None:
    if _CONTROL_EXCEPT_NEWLINES.search(value):
        raise ValidationError("Control characters are not allowed.")


def _letter_and_digit(password: str) -> None:
    if not (any(c.isalpha() for c in password) and any(c.isdigit() for c in password)):
        raise ValidationError("Use at least one letter and one digit.")


# Explicit ASCII ranges: "\d" or str.isalnum would let full-width and other scripts' digits in.
USERNAME = validate.Regexp(r"^[A-Za-z0-9_]{3,20}\Z", error="Use 3 to 20 letters, digits or underscores.")
PASSWORD = [validate.Length(min=8, max=128), _letter_and_digit, _no_nul]


DISPLAY_NAME_MAX = 30


class DisplayName(fields.String):
    """The name people read: any script, 1 to 30 characters once trimmed (NFC), no control,
    format or private-use characters (so no bidirectional overrides). Blank clears it (None)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        name = unicodedata.normalize("NFC", super()._deserialize(value, attr, data, **kwargs)).strip()
        if not name:
            return None
        if len(name) > DISPLAY_NAME_MAX:
            raise ValidationError(f"Use at most {DISPLAY_NAME_MAX} characters.")
        if any(unicodedata.category(char)[0] == "C" or unicodedata.category(char) in ("Zl", "Zp") for char in name):
            raise ValidationError("Control and formatting characters are not allowed.")
        return name


class LowerEmail(fields.Email):
    """An e-mail address, trimmed and lower-cased."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=[validate.Length(max=254), _single_line], **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return super()._deserialize(value, attr, data, **kwargs).strip().lower()


class StrictBoolean(fields.Boolean):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(truthy={True}, falsy={False}, **kwargs)


class RegisterSchema(Schema):
    username = fields.String(required=True, validate=USERNAME)
    email = LowerEmail(required=True)
    password = fields.String(required=True, validate=PASSWORD)
    display_name = DisplayName(data_key="displayName", load_default=None, allow_none=True)
    # The web client keeps a new account's session across browser restarts, like "remember me".
    remember_me = StrictBoolean(data_key="rememberMe", load_default=True)


class LoginSchema(Schema):
    username = fields.String(required=True, validate=[validate.Length(min=1, max=254), _single_line])
    password = fields.String(required=True, validate=[validate.Length(min=1, max=1024), _no_nul])
    remember_me = StrictBoolean(data_key="rememberMe", load_default=False)


class RefreshSchema(Schema):
    refresh_token = fields.String(data_key="refreshToken", required=True,
                                  validate=[validate.Length(min=1, max=200), _single_line])


class LogoutSchema(Schema):
    refresh_token = fields.String(data_key="refreshToken", load_default=None,
                                  validate=[validate.Length(min=1, max=200), _single_line])


class PrivacySchema(Schema):
    new_works_public = StrictBoolean(data_key="newWorksPublic")
    profile_visible = StrictBoolean(data_key="profileVisible")


class ProfileUpdateSchema(Schema):
    display_name = DisplayName(data_key="displayName", allow_none=True)
    username = fields.String(validate=USERNAME)
    email = LowerEmail()
    bio = fields.String(validate=[validate.Length(max=200), _multi_line])
    website = fields.String(validate=[validate.Length(max=200), _single_line])
    location = fields.String(validate=[validate.Length(max=100), _single_line])
    privacy = fields.Nested(PrivacySchema)

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give at least one field to change.")

    @post_load
    def _check_website(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        # An empty string clears the website; anything else must be an http(s) URL.
        website = data.get("website")
        if website:
            website = website.strip()
            try:
                validate.URL(schemes={"http", "https"}, require_tld=True)(website)
            except ValidationError as exc:
                raise ValidationError({"website": exc.messages}) from exc
            data["website"] = website
        return data


class PasswordChangeSchema(Schema):
    # Left out only by an account without a password yet (made by single sign-on).
    current_password = fields.String(data_key="currentPassword", load_default=None,
                                     validate=validate.Length(min=1, max=1024))
    new_password = fields.String(data_key="newPassword", required=True, validate=PASSWORD)


class ForgotPasswordSchema(Schema):
    email = LowerEmail(required=True)


class ResetPasswordSchema(Schema):
    token = fields.String(required=True, validate=[validate.Length(min=1, max=200), _single_line])
    new_password = fields.String(data_key="newPassword", required=True, validate=PASSWORD)


class DeleteAccountSchema(Schema):
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))


def _user_ids(**kwargs: Any) -> CommaSeparated:
    return CommaSeparated(fields.Integer(validate=validate.Range(min=1, max=MAX_ID)), max_items=100, **kwargs)


class AdminUsersQuerySchema(Schema):
    search = fields.String(load_default="", validate=[validate.Length(max=100), _single_line])
    ids = _user_ids(load_default=None)
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(data_key="pageSize", load_default=20, validate=validate.Range(min=1, max=100))


class RoleSchema(Schema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class UserIdsLookupSchema(Schema):
    ids = _user_ids(required=True)


class UserIdsQuerySchema(Schema):
    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_ID))
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=1000))



SECRET = [validate.Length(min=1, max=200), _single_line]
# A path of this site (not "//host", which a browser reads as another site).
NEXT_PATH = validate.Regexp(r"^/(?![/\\])[^\s\\]{0,199}\Z", error="Give a path of this site, such as /dashboard.")


class SsoStartSchema(Schema):
    intent = fields.String(load_default="login", validate=validate.OneOf(("login", "link")))
    remember_me = StrictBoolean(data_key="rememberMe", load_default=False)
    next = fields.String(load_default="/dashboard", validate=NEXT_PATH)


class SsoCallbackQuerySchema(Schema):
    """What a provider sends back; anything else it adds (session_state, iss, appid…) is ignored."""

    class Meta:
        unknown = EXCLUDE

    state = fields.String(load_default="", validate=validate.Length(max=1000))
    code = fields.String(load_default="", validate=validate.Length(max=4000))
    error = fields.String(load_default="", validate=validate.Length(max=1000))
    error_description = fields.String(load_default="", validate=validate.Length(max=1000))


class SsoTicketSchema(Schema):
    ticket = fields.String(required=True, validate=SECRET)
    binding = fields.String(required=True, validate=SECRET)


class SsoRegisterSchema(SsoTicketSchema):
    username = fields.String(required=True, validate=USERNAME)


class ProviderSwitchSchema(Schema):
    enabled = StrictBoolean(required=True)


class TokenOwnerQuerySchema(Schema):
    user_id = fields.Integer(data_key="userId", load_default=None, validate=validate.Range(min=1, max=MAX_ID))


class ApiTokenCreateSchema(Schema):
    name = fields.String(required=True, validate=[validate.Length(min=1, max=100), _single_line])
    scopes = fields.List(fields.String(validate=validate.OneOf(SCOPES)), required=True,
                         validate=validate.Length(min=1, max=len(SCOPES)))
    expires_in_days = fields.Integer(data_key="expiresInDays", load_default=90, allow_none=True, strict=True,
                                     validate=validate.Range(min=1, max=3650))
    user_id = fields.Integer(data_key="userId", load_default=None, strict=True, validate=validate.Range(min=1, max=MAX_ID))


class TokenExchangeSchema(Schema):
    token = fields.String(required=True, validate=[validate.Length(min=1, max=200), _single_line])


class ServiceAccountUserSchema(Schema):
    username = fields.String(required=True, validate=USERNAME)
