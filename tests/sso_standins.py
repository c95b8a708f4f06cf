"""Stand-ins for the outside identity providers, served over real HTTP by the tests.

``OidcStandIn`` is a small OpenID Connect provider: discovery, JWKS, an authorization page
(a form the person submits, as at a real provider), a token endpoint that checks the client's
secret, the redirect URI, the PKCE verifier and that a code is used once, and ID tokens
signed RS256 with a real key. ``next_token`` bends the next ID token the way an attacker or a
broken provider would (another nonce or audience, expired, signed with another key).

``WeComStandIn`` speaks WeCom's documented endpoints (``/cgi-bin/gettoken``,
``/cgi-bin/auth/getuserinfo``, ``/cgi-bin/user/get``, with WeCom's errcode/errmsg answers)
and its two sign-in pages (扫码登录 and 网页授权); it counts ``gettoken`` calls.
"""
from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from flask import Flask, Response, jsonify, redirect, request
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

CLIENT_ID = "aigc-platform"
CLIENT_SECRET = "test-client-secret"
CORP_ID = "ww0123456789abcdef"
AGENT_ID = "1000002"
CORP_SECRET = "test-corp-secret"


def _form(title: str, action: str, fields: dict[str, str], button: str) -> str:
    hidden = "".join(f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
                     for name, value in fields.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1><form method='post' action='{html.escape(action)}'>{hidden}"
            f"<button type='submit' id='approve'>{html.escape(button)}</button></form></body></html>")


@dataclass
class OidcStandIn:
    url: str = ""
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True))
    # The same key id, another key: a token signed with it must fail the signature check.
    forged_key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"},
                                                                          private=True))
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # login name -> claims
    redirect_uris: set[str] = field(default_factory=set)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_token: dict[str, Any] = field(default_factory=dict)  # claim overrides, "expired", "forged"
    issuer_suffix: str = ""  # "/": an issuer that ends with a slash, as Auth0's does

    @property
    def issuer(self) -> str:
        return self.url + self.issuer_suffix

    def add_user(self, login: str, **claims: Any) -> dict[str, Any]:
        self.users[login] = {"sub": f"sub-{login}-{secrets.token_hex(4)}", "preferred_username": login, **claims}
        return self.users[login]

    def approve(self, authorize_url: str, login: str) -> str:
        """Sign in as ``login`` on the authorization page; the URL the provider sends the browser to."""
        query = {name: values[0] for name, values in parse_qs(urlsplit(authorize_url).query).items()}
        response = requests.post(f"{self.url}/authorize", data={**query, "login": login}, allow_redirects=False,
                                 timeout=10)
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    def app(self) -> Flask:
        app = Flask("oidc_stand_in")

        def oauth_error(error: str, status: int = 400):
            return jsonify({"error": error, "error_description": error}), status

        @app.get("/.well-known/openid-configuration")
        def discovery():
            return jsonify({"issuer": self.issuer, "authorization_endpoint": f"{self.url}/authorize",
                            "token_endpoint": f"{self.url}/token", "jwks_uri": f"{self.url}/jwks",
                            "end_session_endpoint": f"{self.url}/logout",
                            "response_types_supported": ["code"], "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["RS256"],
                            "code_challenge_methods_supported": ["S256"],
                            "scopes_supported": ["openid", "profile", "email", "groups"]})

        @app.get("/jwks")
        def jwks():
            return jsonify(KeySet([self.key]).as_dict(private=False))

        @app.get("/authorize")
        def authorize_page():
            args = request.args.to_dict()
            problem = self._check_authorization(args)
            if problem:
                return problem, 400
            return _form("Test identity provider: sign in", "/authorize",
                         {**args, "login": next(iter(self.users), "")},
                         f"Continue as {next(iter(self.users), '?')}")

        @app.post("/authorize")
        def authorize():
            args = request.form.to_dict()
            problem = self._check_authorization(args)
            if problem or args.get("login") not in self.users:
                return problem or "unknown user", 400
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"login": args["login"], "redirect_uri": args["redirect_uri"],
                                "nonce": args.get("nonce"), "challenge": args["code_challenge"], "used": False}
            return redirect(f"{args['redirect_uri']}?{urlencode({'code': code, 'state': args.get('state', '')})}")

        @app.post("/token")
        def token():
            client_id, secret = _client_credentials()
            if (client_id, secret) != (CLIENT_ID, CLIENT_SECRET):
                return oauth_error("invalid_client", 401)
            form = request.form
            grant = self.codes.get(form.get("code", ""))
            if form.get("grant_type") != "authorization_code" or grant is None or grant["used"]:
                return oauth_error("invalid_grant")
            grant["used"] = True
            if form.get("redirect_uri") != grant["redirect_uri"]:
                return oauth_error("invalid_grant")
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if challenge != grant["challenge"]:
                return oauth_error("invalid_grant")
            return jsonify({"access_token": secrets.token_urlsafe(24), "token_type": "Bearer", "expires_in": 300,
                            "id_token": self._id_token(grant)})

        @app.get("/logout")
        def logout():
            return "signed out of the test provider"

        @app.get("/favicon.ico")
        def favicon():
            return "", 204

        return app

    def _check_authorization(self, args: dict[str, str]) -> str | None:
        if args.get("client_id") != CLIENT_ID:
            return "unknown client"
        if args.get("redirect_uri") not in self.redirect_uris:
            return "redirect_uri not registered"
        if args.get("response_type") != "code" or "openid" not in args.get("scope", "").split():
            return "only the code flow with the openid scope"
        if args.get("code_challenge_method") != "S256" or not args.get("code_challenge"):
            return "PKCE (S256) is required"
        return None

    def _id_token(self, grant: dict[str, Any]) -> str:
        bend, self.next_token = self.next_token, {}
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": grant["nonce"],
                  **self.users[grant["login"]]}
        if bend.pop("expired", False):
            claims.update(iat=now - 3600, exp=now - 1800)
        key = self.forged_key if bend.pop("forged", False) else self.key
        claims.update(bend)
        return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)


def _client_credentials() -> tuple[str | None, str | None]:
    if request.authorization and request.authorization.type == "basic":
        return request.authorization.username, request.authorization.password
    return request.form.get("client_id"), request.form.get("client_secret")


@dataclass
class WeComStandIn:
    url: str = ""
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # userid -> user/get answer
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    gettoken_calls: int = 0

    def add_member(self, userid: str, **fields: Any) -> dict[str, Any]:
        self.members[userid] = {"userid": userid, "name": userid, "department": [1], "position": "", **fields}
        return self.members[userid]

    def expire_tokens(self) -> None:
        """WeCom ends every access token it issued (as at its expiry): the next call answers 42001."""
        self.tokens.clear()

    def scan(self, authorize_url: str, userid: str | None) -> str:
        """Confirm the sign-in on the QR page (as if scanned on a phone) as ``userid`` (None: as someone
        outside the company); the URL WeCom sends the browser to."""
        query = {name: values[0] for name, values in parse_qs(urlsplit(authorize_url).query).items()}
        response = requests.post(f"{self.url}/wwlogin/sso/login", data={**query, "userid": userid or ""},
                                 allow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    def app(self) -> Flask:
        app = Flask("wecom_stand_in")

        def error(errcode: int, errmsg: str):
            return jsonify({"errcode": errcode, "errmsg": errmsg})

        def token_problem():
            if request.args.get("access_token") not in self.tokens:
                return error(42001, "access_token expired")
            return None

        @app.get("/cgi-bin/gettoken")
        def gettoken():
            self.gettoken_calls += 1
            if (request.args.get("corpid"), request.args.get("corpsecret")) != (CORP_ID, CORP_SECRET):
                return error(40001, "invalid credential")
            token = secrets.token_urlsafe(32)
            self.tokens.add(token)
            return jsonify({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200})

        @app.get("/cgi-bin/auth/getuserinfo")
        def getuserinfo():
            problem = token_problem()
            if problem:
                return problem
            grant = self.codes.get(request.args.get("code", ""))
            if grant is None or grant["used"]:
                return error(40029, "invalid code")
            grant["used"] = True
            if grant["userid"] is None:
                return jsonify({"errcode": 0, "errmsg": "ok", "openid": "o-outsider"})
            return jsonify({"errcode": 0, "errmsg": "ok", "userid": grant["userid"],
                            "user_ticket": secrets.token_urlsafe(8)})

        @app.get("/cgi-bin/user/get")
        def user_get():
            problem = token_problem()
            if problem:
                return problem
            member = self.members.get(request.args.get("userid", ""))
            if member is None:
                return error(60111, "userid not found")
            return jsonify({"errcode": 0, "errmsg": "ok", **member})

        def issue(args: dict[str, str], userid: str | None) -> Response:
            if args.get("appid") != CORP_ID or args.get("agentid") != AGENT_ID:
                return Response("应用配置错误", status=400)
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"userid": userid, "used": False}
            return redirect(f"{args['redirect_uri']}?{urlencode({'code': code, 'state': args.get('state', '')})}")

        @app.get("/wwlogin/sso/login")
        def qr_page():
            member = next(iter(self.members), "")
            return _form("企业微信扫码登录（测试）", "/wwlogin/sso/login", {**request.args.to_dict(), "userid": member},
                         f"模拟扫码确认：{member}")

        @app.post("/wwlogin/sso/login")
        def qr_confirm():
            args = request.form.to_dict()
            return issue(args, args.get("userid") or None)

        @app.get("/favicon.ico")
        def favicon():
            return "", 204

        @app.get("/connect/oauth2/authorize")
        def in_client():
            # snsapi_base inside the WeCom client asks nothing: the member is sent straight back.
            return issue(request.args.to_dict(), next(iter(self.members), None))

        return app
