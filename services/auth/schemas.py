"""Input schemas of the auth API. Unknown fields are rejected (marshmallow 4 RAISE)."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, post_load, validate


def _letter_and_digit(password: str) -> None:
    if not (any(c.isalpha() for c in password) and any(c.isdigit() for c in password)):
        raise ValidationError("Use at least one letter and one digit.")


USERNAME = validate.Regexp(r"^[A-Za-z0-9_]{3,20}\Z",
                           error="Use 3 to 20 letters, digits or underscores.")
PASSWORD = [validate.Length(min=8, max=128), _letter_and_digit]


class RegisterSchema(Schema):
    username = fields.String(required=True, validate=USERNAME)
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, validate=PASSWORD)

    @post_load
    def _normalise(self, data: dict, **_kwargs) -> dict:
        data["email"] = data["email"].strip().lower()
        return data


class LoginSchema(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=254))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    remember_me = fields.Boolean(data_key="rememberMe", load_default=False, truthy={True}, falsy={False})


class ProfileUpdateSchema(Schema):
    bio = fields.String(required=True, validate=validate.Length(max=500))
