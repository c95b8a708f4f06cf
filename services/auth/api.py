"""Routes of the auth service (reached through the gateway, which adds the service token)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, redirect, request
from marshmallow import Schema, ValidationError

from shared.errors import ok
from shared.openapi import doc, spec_response
from shared.tokens import bearer_token, optional_user, require_admin, require_user
from shared.web import after_response, load_json, load_query
from services.auth.avatars import MAX_AVATAR_BYTES
from services.auth.schemas import (AdminUsersQuerySchema, ApiTokenCreateSchema, DeleteAccountSchema,
                                   ForgotPasswordSchema, LoginSchema, LogoutSchema, PasswordChangeSchema,
                                   ProfileUpdateSchema, ProviderSwitchSchema, RefreshSchema, RegisterSchema,
                                   ResetPasswordSchema, RoleSchema, ServiceAccountUserSchema, SsoCallbackQuerySchema,
                                   SsoRegisterSchema, SsoStartSchema, SsoTicketSchema, TokenExchangeSchema,
                                   TokenOwnerQuerySchema, UserIdsLookupSchema, UserIdsQuerySchema)
from services.auth.admin import Administration
from services.auth.api_tokens import ApiTokens
from services.auth.deletion import AccountDeletion
from services.auth.directory import Directory
from services.auth.identities import LinkedIdentities, ProviderSwitches
from services.auth.passwords import Passwords
from services.auth.service import Accounts
from services.auth.service_accounts import ServiceAccounts
from services.auth.sessions import Sessions
from services.auth.sso import SingleSignOn

bp = Blueprint("auth", __name__)


def _accounts() -> Accounts:
    return current_app.extensions["auth"]


def _sessions() -> Sessions:
    return current_app.extensions["auth_sessions"]


def _passwords() -> Passwords:
    return current_app.extensions["auth_passwords"]


def _deletion() -> AccountDeletion:
    return current_app.extensions["auth_deletion"]


def _directory() -> Directory:
    return current_app.extensions["auth_directory"]


def _admin() -> Administration:
    return current_app.extensions["auth_admin"]


def _sso() -> SingleSignOn:
    return current_app.extensions["auth_sso"]


def _identities() -> LinkedIdentities:
    return current_app.extensions["auth_identities"]


def _switches() -> ProviderSwitches:
    return current_app.extensions["auth_provider_switches"]


def _api_tokens() -> ApiTokens:
    return current_app.extensions["auth_api_tokens"]


def _service_accounts() -> ServiceAccounts:
    return current_app.extensions["auth_service_accounts"]


def _optional_json(schema: Schema) -> Any:
    """Like ``load_json``, but an empty body counts as ``{}``."""
    return load_json(schema) if request.get_data() else schema.load({})


def _avatar_upload() -> bytes:
    """The bytes of the multipart field ``avatar`` (the only field allowed)."""
    upload = request.files.get("avatar")
    extra = sorted(set(request.files) - {"avatar"} | set(request.form))
    if extra:
        raise ValidationError({name: ["Unknown field."] for name in extra})
    if upload is None:
        raise ValidationError({"avatar": ["Send the picture as the multipart field 'avatar'."]})
    return upload.stream.read(MAX_AVATAR_BYTES + 1)


@bp.post("/api/users/register")
@doc("Register and sign in", body=RegisterSchema, status=201,
     errors={409: "USERNAME_TAKEN, EMAIL_TAKEN", 422: "CONTENT_REJECTED (username or display name)"},
     description="Answers the user, an access token and a refresh token; opens the credit account. "
                 "`rememberMe` (default true) gives the refresh token the remember-me lifetime.")
def register():
    data = load_json(RegisterSchema())
    return ok(_accounts().register(data["username"], data["email"], data["password"], data["display_name"],
                                   data["remember_me"]).to_dict(), 201)


@bp.post("/api/users/login")
@doc("Sign in with username or e-mail", body=LoginSchema,
     errors={401: "INVALID_CREDENTIALS", 403: "ACCOUNT_DISABLED"})
def login():
    data = load_json(LoginSchema())
    return ok(_sessions().login(data["username"], data["password"], data["remember_me"]).to_dict())


@bp.post("/api/users/token/refresh")
@doc("Rotate a refresh token for a new pair", body=RefreshSchema,
     errors={401: "REFRESH_TOKEN_INVALID, REFRESH_TOKEN_EXPIRED, TOKEN_REVOKED, TOKEN_REUSED", 403: "ACCOUNT_DISABLED"})
def refresh():
    data = load_json(RefreshSchema())
    return ok(_sessions().refresh(data["refresh_token"]).to_dict())


@bp.post("/api/users/logout")
@doc("Sign out: end this session (access token and/or refresh token)", auth="optional", body=LogoutSchema,
     errors={401: "NO_TOKEN when neither token is given"})
def logout():
    data = _optional_json(LogoutSchema())
    _sessions().logout(optional_user(), data["refresh_token"])
    return ok({"signedOut": True})


@bp.get("/api/users/profile")
@doc("The caller's profile", auth="user", errors={404: "USER_NOT_FOUND"})
def profile():
    claims = require_user()
    return ok({"user": _accounts().profile(claims.user_id)})


@bp.put("/api/users/profile")
@doc("Update the caller's profile and privacy settings", auth="user", body=ProfileUpdateSchema,
     errors={409: "USERNAME_TAKEN, EMAIL_TAKEN", 422: "CONTENT_REJECTED (username, display name or bio)"})
def update_profile():
    claims = require_user()
    data = load_json(ProfileUpdateSchema())
    return ok({"user": _accounts().update_profile(claims.user_id, data)})


@bp.put("/api/users/password")
@doc("Change the password (ends every other session)", auth="user", body=PasswordChangeSchema,
     errors={422: "INVALID_PASSWORD (details.currentPassword)", 409: "PASSWORD_CHANGED"},
     description="An account made by single sign-on sets its first password without currentPassword.")
def change_password():
    claims = require_user()
    data = load_json(PasswordChangeSchema())
    return ok(_passwords().change_password(claims, data["current_password"], data["new_password"]).to_dict())


@bp.post("/api/users/password/forgot")
@doc("Mail a password-reset link (the same answer, in the same time, whether the address is known or not)",
     body=ForgotPasswordSchema)
def forgot_password():
    data = load_json(ForgotPasswordSchema())
    passwords = _passwords()
    # Looking the address up, storing a token and mailing happen after the answer has gone,
    # so its timing cannot tell whether the address has an account.
    after_response(lambda: passwords.request_password_reset(data["email"]))
    return ok({"message": "If an account uses this address, a reset link is on its way."})


@bp.post("/api/users/password/reset")
@doc("Set a new password with a reset token (ends every session)", body=ResetPasswordSchema,
     errors={400: "RESET_TOKEN_INVALID, RESET_TOKEN_EXPIRED"})
def reset_password():
    data = load_json(ResetPasswordSchema())
    _passwords().reset_password(data["token"], data["new_password"])
    return ok({"reset": True})


@bp.post("/api/users/avatar")
@doc("Upload an avatar (PNG, JPEG or WebP up to 2 MB; stored as a square WebP)", auth="user",
     multipart={"avatar": "The picture"}, errors={413: "PAYLOAD_TOO_LARGE", 422: "INVALID_IMAGE"})
def upload_avatar():
    claims = require_user()
    user = _accounts().set_avatar(claims.user_id, _avatar_upload())
    return ok({"avatarUrl": user["avatarUrl"], "user": user})


@bp.delete("/api/users/me")
@doc("Delete the caller's account, works and files", auth="user", body=DeleteAccountSchema,
     errors={422: "INVALID_PASSWORD (details.password)", 403: "PASSWORD_NOT_SET"})
def delete_account():
    claims = require_user()
    data = load_json(DeleteAccountSchema())
    _deletion().delete_account(claims, data["password"])
    return ok({"deleted": True})


@bp.get("/api/users/me/export")
@doc("Export the caller's profile, credit history and works as JSON", auth="user",
     errors={503: "SERVICE_UNAVAILABLE"})
def export_account():
    claims = require_user()
    return ok(_directory().export(claims, bearer_token()))


@bp.get("/api/users/<username>/public")
@doc("A user's public profile", auth="optional", errors={404: "USER_NOT_FOUND (also for hidden profiles)"})
def public_profile(username: str):
    return ok(_directory().public_profile(username, optional_user()))


@bp.get("/api/admin/users")
@doc("List and search users (by login name, display name or e-mail), or look up `ids`", auth="admin",
     query=AdminUsersQuerySchema,
     description="Each item carries `credits {available, held}` from the credits service (null when it "
                 "cannot say).")
def admin_list_users():
    require_admin()
    query = load_query(AdminUsersQuerySchema())
    return ok(_admin().list_users(query["search"], query["page"], query["page_size"], query["ids"]))


@bp.post("/api/admin/users/<id:user_id>/disable")
@doc("Disable a user (their tokens stop at once)", auth="admin",
     errors={404: "USER_NOT_FOUND", 409: "CANNOT_DISABLE_SELF"})
def admin_disable_user(user_id: int):
    return ok({"user": _admin().set_active(require_admin(), user_id, False)})


@bp.post("/api/admin/users/<id:user_id>/enable")
@doc("Enable a user", auth="admin", errors={404: "USER_NOT_FOUND"})
def admin_enable_user(user_id: int):
    return ok({"user": _admin().set_active(require_admin(), user_id, True)})


@bp.put("/api/admin/users/<id:user_id>/role")
@doc("Change a user's role", auth="admin", body=RoleSchema,
     errors={404: "USER_NOT_FOUND", 409: "CANNOT_CHANGE_OWN_ROLE"})
def admin_set_role(user_id: int):
    admin = require_admin()
    data = load_json(RoleSchema())
    return ok({"user": _admin().set_role(admin, user_id, data["role"])})


@bp.get("/api/auth/providers")
@doc("The sign-in providers that are on (never their secrets or endpoints)")
def sso_providers():
    return ok({"providers": _sso().public_providers()})


@bp.post("/api/auth/sso/<provider>/start")
@doc("Start signing in (or, signed in, linking) with a provider", auth="optional", body=SsoStartSchema,
     errors={401: "NO_TOKEN (linking needs a session)", 403: "PROVIDER_DISABLED", 404: "PROVIDER_NOT_FOUND",
             502: "PROVIDER_UNAVAILABLE"},
     description="Answers the provider's authorization URL and a binding secret the web client keeps in its "
                 "tab and presents with the ticket.")
def sso_start(provider: str):
    claims = optional_user()
    data = _optional_json(SsoStartSchema())
    return ok(_sso().start(provider, data["intent"], claims, data["remember_me"], data["next"],
                           request.headers.get("User-Agent", "")))


@bp.get("/api/auth/sso/<provider>/callback")
@doc("Where the provider sends the browser back", query=SsoCallbackQuerySchema, status=302,
     description="Redirects to the web client's /sso/callback with a one-time ticket, or an error code, in the "
                 "URL fragment (never sent to a server).")
def sso_callback(provider: str):
    try:
        params = load_query(SsoCallbackQuerySchema())
    except ValidationError:
        # A value longer than any provider sends is a crafted link: the person still lands on
        # the web client's page, which says the sign-in link is not valid (STATE_INVALID).
        params = {}
    response = redirect(_sso().callback(provider, params), code=302)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.post("/api/auth/sso/exchange")
@doc("Spend a sign-in ticket: a session, or a sign-up or link to confirm", body=SsoTicketSchema,
     errors={400: "TICKET_INVALID, BROWSER_MISMATCH", 403: "PROVIDER_DISABLED, ACCOUNT_DISABLED",
             409: "ALREADY_LINKED, IDENTITY_LINKED_ELSEWHERE, PROVIDER_ALREADY_LINKED"},
     description="status is signedIn (with the session, as login answers), signup or link.")
def sso_exchange():
    data = load_json(SsoTicketSchema())
    return ok(_sso().exchange(data["ticket"], data["binding"]))


@bp.post("/api/auth/sso/register")
@doc("Make a new account (without a password) for a new identity, and sign in", body=SsoRegisterSchema,
     status=201, errors={400: "TICKET_INVALID, BROWSER_MISMATCH", 403: "PROVIDER_DISABLED",
                         409: "USERNAME_TAKEN, IDENTITY_LINKED",
                         422: "CONTENT_REJECTED (the username matches the term list)"})
def sso_register():
    data = load_json(SsoRegisterSchema())
    return ok(_sso().register(data["ticket"], data["binding"], data["username"]), 201)


@bp.post("/api/auth/sso/link")
@doc("Confirm linking the identity of a link sign-in to the caller's account", auth="user", body=SsoTicketSchema,
     errors={400: "TICKET_INVALID, BROWSER_MISMATCH", 403: "PROVIDER_DISABLED",
             409: "ALREADY_LINKED, IDENTITY_LINKED_ELSEWHERE, PROVIDER_ALREADY_LINKED"})
def sso_link():
    claims = require_user()
    data = load_json(SsoTicketSchema())
    return ok(_sso().link(claims, data["ticket"], data["binding"]))


@bp.get("/api/users/me/identities")
@doc("The caller's linked identities", auth="user")
def my_identities():
    return ok(_identities().of_user(require_user().user_id))


@bp.delete("/api/users/me/identities/<id:identity_id>")
@doc("Unlink one of the caller's identities", auth="user",
     errors={404: "IDENTITY_NOT_FOUND", 409: "LAST_SIGN_IN_METHOD"})
def unlink_identity(identity_id: int):
    return ok(_identities().unlink(require_user().user_id, identity_id))


@bp.get("/api/admin/users/<id:user_id>/identities")
@doc("A user's linked identities", auth="admin", errors={404: "USER_NOT_FOUND"})
def admin_user_identities(user_id: int):
    require_admin()
    return ok(_identities().of_user(user_id))


@bp.get("/api/admin/auth/providers")
@doc("Every configured sign-in provider and whether it is on", auth="admin")
def admin_providers():
    require_admin()
    return ok({"providers": _switches().states()})


@bp.put("/api/admin/auth/providers/<provider>")
@doc("Turn a sign-in provider on or off (off stops sign-ins at once, even those under way)", auth="admin",
     body=ProviderSwitchSchema, errors={404: "PROVIDER_NOT_FOUND"})
def admin_switch_provider(provider: str):
    admin = require_admin()
    data = load_json(ProviderSwitchSchema())
    return ok({"provider": _switches().set_enabled(admin.user_id, provider, data["enabled"])})


@bp.get("/api/tokens")
@doc("The caller's API tokens (an administrator may name a service account with userId)", auth="user",
     query=TokenOwnerQuerySchema, errors={403: "INSUFFICIENT_SCOPE, NOT_A_SERVICE_ACCOUNT", 404: "USER_NOT_FOUND"},
     description="Never with an API token: tokens are managed from a signed-in session.")
def list_api_tokens():
    claims = require_user()
    return ok(_api_tokens().list_tokens(claims, load_query(TokenOwnerQuerySchema())["user_id"]))


@bp.post("/api/tokens")
@doc("Create an API token (shown once) with scopes and an expiry", auth="user", body=ApiTokenCreateSchema,
     status=201, errors={403: "INSUFFICIENT_SCOPE, NOT_A_SERVICE_ACCOUNT", 404: "USER_NOT_FOUND", 409: "TOKEN_LIMIT"},
     description="Scopes: generate, works:read, works:write, credits:read, webhooks. Use the token as "
                 "`Authorization: Bearer pat_…` on the REST API; it is never accepted by account routes "
                 "(profile, password, e-mail, tokens).")
def create_api_token():
    claims = require_user()
    data = load_json(ApiTokenCreateSchema())
    return ok(_api_tokens().create(claims, data["user_id"], data["name"], data["scopes"], data["expires_in_days"]),
              201)


@bp.delete("/api/tokens/<token_id>")
@doc("Revoke an API token (refused everywhere at once)", auth="user", query=TokenOwnerQuerySchema,
     errors={403: "INSUFFICIENT_SCOPE, NOT_A_SERVICE_ACCOUNT", 404: "TOKEN_NOT_FOUND, USER_NOT_FOUND"})
def revoke_api_token(token_id: str):
    claims = require_user()
    return ok({"apiToken": _api_tokens().revoke(claims, load_query(TokenOwnerQuerySchema())["user_id"], token_id)})


@bp.post("/internal/tokens/exchange")
@doc("Exchange an API token for a short-lived access token with its scopes (for the gateway)",
     body=TokenExchangeSchema, errors={401: "TOKEN_INVALID, TOKEN_EXPIRED, TOKEN_REVOKED"})
def exchange_api_token():
    return ok(_api_tokens().exchange(load_json(TokenExchangeSchema())["token"]))


@bp.post("/internal/service-accounts")
@doc("Create a service account's user (idempotent by name; for the integrations service)",
     body=ServiceAccountUserSchema, status=201, errors={409: "USERNAME_TAKEN"},
     description="201 when created, 200 when the service account already existed.")
def create_service_account_user():
    user, created = _service_accounts().create(load_json(ServiceAccountUserSchema())["username"])
    return ok({"user": user}, 201 if created else 200)


@bp.get("/internal/users/ids")
@doc("Page through every user id (for sweeps by other services)", query=UserIdsQuerySchema)
def internal_user_ids():
    query = load_query(UserIdsQuerySchema())
    return ok(_directory().user_ids(query["after"], query["limit"]))


@bp.get("/internal/users")
@doc("Directory entries of up to 100 users at once (unknown ids are left out)", query=UserIdsLookupSchema)
def internal_users():
    query = load_query(UserIdsLookupSchema())
    return ok({"items": _directory().directory_entries(query["ids"])})


@bp.get("/internal/users/<id:user_id>")
@doc("A user's directory entry (name, avatar, role, state)", errors={404: "USER_NOT_FOUND"})
def internal_user(user_id: int):
    return ok(_directory().directory_entry(user_id))


@bp.get("/openapi.json")
@doc("This service's OpenAPI description")
def openapi_spec():
    return spec_response("AIGC platform: auth")
