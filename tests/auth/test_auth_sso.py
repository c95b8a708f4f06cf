"""Single sign-on end to end against a real OpenID Connect provider and a WeCom stand-in, both
served over HTTP: sign-up, sign-in, linking and unlinking, and every attack the flow must refuse."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from shared.config import load_settings
from services.auth.config import load_config
from services.auth.external import IdTokenInvalid, SignInFlow
from services.auth.oidc import OidcProvider
from tests.auth.conftest import PASSWORD, build_auth_app
from tests.conftest import serve
from tests.sso_standins import (AGENT_ID, CLIENT_ID, CLIENT_SECRET, CORP_ID, CORP_SECRET, OidcStandIn,
                                WeComStandIn)

PUBLIC_URL = "http://platform.test"
IDP = "idp"
STRICT = "strict"  # the same issuer, configured without linking by verified e-mail
WECOM_UA = "Mozilla/5.0 (iPhone) AppleWebKit wxwork/4.1.0 MicroMessenger/7.0.1"


@pytest.fixture(scope="module")
def oidc() -> Iterator[OidcStandIn]:
    stand_in = OidcStandIn()
    running = serve(stand_in.app())
    stand_in.url = running.url
    stand_in.redirect_uris.update(f"{PUBLIC_URL}/api/auth/sso/{key}/callback" for key in (IDP, STRICT))
    yield stand_in
    running.stop()


@pytest.fixture(scope="module")
def wecom() -> Iterator[WeComStandIn]:
    stand_in = WeComStandIn()
    running = serve(stand_in.app())
    stand_in.url = running.url
    yield stand_in
    running.stop()


@pytest.fixture(scope="module")
def sso_app(auth_env, oidc, wecom):
    providers = [{"key": IDP, "name": "Test IdP", "icon": "/icons/idp.svg", "issuer": oidc.url,
                  "clientId": CLIENT_ID, "scopes": "openid profile email groups", "adminGroups": ["platform-admins"],
                  "autoLinkVerifiedEmail": True},
                 {"key": STRICT, "name": "Strict IdP", "issuer": oidc.url, "clientId": CLIENT_ID}]
    app = build_auth_app({**auth_env, "PUBLIC_URL": PUBLIC_URL, "OIDC_PROVIDERS": json.dumps(providers),
                          "OIDC_IDP_CLIENT_SECRET": CLIENT_SECRET, "OIDC_STRICT_CLIENT_SECRET": CLIENT_SECRET,
                          "WECHAT_CORP_ID": CORP_ID, "WECHAT_AGENT_ID": AGENT_ID, "WECHAT_SECRET": CORP_SECRET,
                          "WECHAT_API_URL": wecom.url, "WECHAT_OAUTH_URL": f"{wecom.url}/connect/oauth2/authorize",
                          "WECHAT_QR_LOGIN_URL": f"{wecom.url}/wwlogin/sso/login"})
    yield app
    app.extensions["db"].dispose()
    app.extensions["redis"].close()


@dataclass
class Flow:
    """One browser tab's sign-in: what the start answered and where the callback sent it."""

    binding: str
    authorize_url: str
    landing: dict[str, str] | None = None


class Browser:
    """Drives the auth app the way the web client and the browser do."""

    def __init__(self, app, service_headers: dict[str, str]) -> None:
        self.client = app.test_client()
        self.headers = service_headers

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any):
        headers = {**self.headers, **kwargs.pop("headers", {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def start(self, provider: str, token: str | None = None, user_agent: str = "Mozilla/5.0 Chrome/140",
              **body: Any) -> Flow:
        response = self.call("POST", f"/api/auth/sso/{provider}/start", token, json=body,
                             headers={"User-Agent": user_agent})
        assert response.status_code == 200, response.json
        data = response.json["data"]
        return Flow(data["binding"], data["authorizeUrl"])

    def come_back(self, flow: Flow, provider_redirect: str) -> dict[str, str]:
        """Follow the provider's redirect to our callback; the web client's landing fragment."""
        parts = urlsplit(provider_redirect)
        response = self.call("GET", f"{parts.path}?{parts.query}")
        assert response.status_code == 302, response.data
        location = urlsplit(response.headers["Location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == f"{PUBLIC_URL}/sso/callback"
        assert not location.query, "nothing secret may travel in the query string"
        flow.landing = {name: values[0] for name, values in parse_qs(location.fragment).items()}
        return flow.landing

    def exchange(self, flow: Flow, binding: str | None = None):
        return self.call("POST", "/api/auth/sso/exchange",
                         json={"ticket": flow.landing["ticket"], "binding": binding or flow.binding})


@pytest.fixture
def browser(sso_app, service_headers) -> Browser:
    return Browser(sso_app, service_headers)


def oidc_sign_in(browser: Browser, oidc: OidcStandIn, login: str, provider: str = IDP,
                 **start: Any) -> tuple[Flow, Any]:
    flow = browser.start(provider, **start)
    landing = browser.come_back(flow, oidc.approve(flow.authorize_url, login))
    assert "ticket" in landing, landing
    return flow, browser.exchange(flow)


def sign_up(browser: Browser, flow: Flow, exchanged, username: str | None = None):
    assert exchanged.status_code == 200 and exchanged.json["data"]["status"] == "signup", exchanged.json
    data = exchanged.json["data"]
    return browser.call("POST", "/api/auth/sso/register", json={
        "ticket": data["ticket"], "binding": flow.binding, "username": username or f"s{uuid.uuid4().hex[:10]}"})


def credits_of(credits_url: str, token: str, service_headers: dict[str, str]) -> dict[str, int]:
    response = requests.get(f"{credits_url}/api/users/credits", timeout=10,
                            headers={**service_headers, "Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def new_login(oidc: OidcStandIn, **claims: Any) -> str:
    login = f"p{uuid.uuid4().hex[:8]}"
    oidc.add_user(login, name=f"Person {login}", email=f"{login}@corp.example", email_verified=True, **claims)
    return login


# Providers


def test_providers_are_listed_without_secrets(browser):
    response = browser.call("GET", "/api/auth/providers")
    assert response.status_code == 200
    providers = response.json["data"]["providers"]
    assert [(p["key"], p["kind"], p["name"]) for p in providers] == [
        (IDP, "oidc", "Test IdP"), (STRICT, "oidc", "Strict IdP"), ("wecom", "wecom", "企业微信")]
    text = response.get_data(as_text=True)
    for secret in (CLIENT_SECRET, CORP_SECRET, CLIENT_ID, CORP_ID):
        assert secret not in text


def test_no_provider_configured_lists_none(auth_app, service_headers):
    response = auth_app.test_client().get("/api/auth/providers", headers=service_headers)
    assert response.json["data"] == {"providers": []}
    unknown = auth_app.test_client().post("/api/auth/sso/idp/start", json={}, headers=service_headers)
    assert (unknown.status_code, unknown.json["error"]["code"]) == (404, "PROVIDER_NOT_FOUND")


# OpenID Connect: the happy path


def test_oidc_new_identity_signs_up_without_password_and_gets_the_bonus_once(browser, oidc, credits_url,
                                                                           service_headers):
    login = new_login(oidc, picture="https://idp.example/a.png")
    flow = browser.start(IDP, next="/create")
    assert flow.authorize_url.startswith(f"{oidc.url}/authorize?")
    query = parse_qs(urlsplit(flow.authorize_url).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    landing = browser.come_back(flow, oidc.approve(flow.authorize_url, login))
    exchanged = browser.exchange(flow)
    data = exchanged.json["data"]
    assert data["status"] == "signup" and data["next"] == "/create"
    assert data["suggestedUsername"] == login and data["emailInUse"] is False
    assert data["identity"]["displayName"] == f"Person {login}" and data["identity"]["providerName"] == "Test IdP"
    assert "accessToken" not in data
    assert browser.exchange(flow).json["error"]["code"] == "TICKET_INVALID", "a ticket is spent once"
    assert landing["provider"] == IDP

    created = sign_up(browser, flow, exchanged, username=login)
    assert created.status_code == 201, created.json
    session = created.json["data"]
    assert session["status"] == "signedIn" and session["user"]["username"] == login
    assert session["user"]["displayName"] == f"Person {login}", "the provider's name is the display name"
    assert session["user"]["email"] == f"{login}@corp.example" and session["user"]["hasPassword"] is False
    assert session["logoutUrl"].startswith(f"{oidc.url}/logout?client_id={CLIENT_ID}")
    assert session["credits"]["available"] == 500
    identities = browser.call("GET", "/api/users/me/identities", session["accessToken"]).json["data"]
    assert [(i["provider"], i["email"], i["avatarUrl"]) for i in identities["items"]] == [
        (IDP, f"{login}@corp.example", "https://idp.example/a.png")]
    assert identities["hasPassword"] is False

    # No password was made up: nobody signs in with one.
    for guess in ("", "wechat_user", login, PASSWORD):
        refused = browser.call("POST", "/api/users/login", json={"username": login, "password": guess or "x"})
        assert refused.status_code in (401, 422), guess

    # The next sign-in goes straight to a session, the platform's own: it refreshes and ends like any other.
    again_flow, again = oidc_sign_in(browser, oidc, login)
    data = again.json["data"]
    assert data["status"] == "signedIn" and data["user"]["id"] == session["user"]["id"]
    assert credits_of(credits_url, data["accessToken"], service_headers)["available"] == 500, "bonus once"
    refreshed = browser.call("POST", "/api/users/token/refresh", json={"refreshToken": data["refreshToken"]})
    assert refreshed.status_code == 200
    new = refreshed.json["data"]
    assert browser.call("POST", "/api/users/logout", new["accessToken"],
                        json={"refreshToken": new["refreshToken"]}).status_code == 200
    assert browser.call("GET", "/api/users/profile", new["accessToken"]).status_code == 401


def test_username_taken_keeps_the_sign_up_open(browser, oidc, make_account):
    taken = make_account()
    login = new_login(oidc)
    flow, exchanged = oidc_sign_in(browser, oidc, login)
    first = sign_up(browser, flow, exchanged, username=taken.username)
    assert (first.status_code, first.json["error"]["code"]) == (409, "USERNAME_TAKEN")
    second = sign_up(browser, flow, exchanged)
    assert second.status_code == 201
    third = sign_up(browser, flow, exchanged)
    assert third.json["error"]["code"] == "TICKET_INVALID"


# OpenID Connect: attacks and failures


def test_wrong_or_missing_state_is_refused(browser, oidc):
    login = new_login(oidc)
    flow = browser.start(IDP)
    redirect = oidc.approve(flow.authorize_url, login)
    forged = redirect.replace("state=", "state=forged")
    assert browser.come_back(flow, forged)["error"] == "STATE_INVALID"
    no_state = redirect.split("&state=")[0]
    assert browser.come_back(flow, no_state)["error"] == "STATE_INVALID"
    oversized = redirect.replace("state=", "state=" + "x" * 1001)
    assert browser.come_back(flow, oversized)["error"] == "STATE_INVALID", "a crafted link lands on the page too"


def test_replayed_code_is_refused(browser, oidc):
    login = new_login(oidc)
    flow = browser.start(IDP)
    redirect = oidc.approve(flow.authorize_url, login)
    assert "ticket" in browser.come_back(flow, redirect)
    assert browser.come_back(flow, redirect)["error"] == "STATE_INVALID", "the state is spent"
    # The same code under a fresh state: the provider refuses it (codes are single-use).
    other = browser.start(IDP)
    state = parse_qs(urlsplit(other.authorize_url).query)["state"][0]
    code = parse_qs(urlsplit(redirect).query)["code"][0]
    landing = browser.come_back(other, f"{PUBLIC_URL}/api/auth/sso/{IDP}/callback?code={code}&state={state}")
    assert landing["error"] == "CODE_REJECTED"


@pytest.mark.parametrize("bend, code", [
    ({"nonce": "someone-elses-nonce"}, "NONCE_MISMATCH"),
    ({"expired": True}, "ID_TOKEN_EXPIRED"),
    ({"forged": True}, "ID_TOKEN_SIGNATURE_INVALID"),
    ({"aud": "another-client"}, "AUDIENCE_MISMATCH"),
    ({"aud": ["another-client", CLIENT_ID]}, "AUDIENCE_MISMATCH"),  # several audiences and no azp
    ({"iss": "https://evil.example"}, "ISSUER_MISMATCH"),
])
def test_bad_id_tokens_are_refused(browser, oidc, bend, code):
    login = new_login(oidc)
    flow = browser.start(IDP)
    redirect = oidc.approve(flow.authorize_url, login)
    oidc.next_token = dict(bend)
    landing = browser.come_back(flow, redirect)
    assert landing["error"] == code, landing
    assert landing["message"]


def test_provider_refusal_is_shown(browser, oidc):
    flow = browser.start(IDP)
    state = parse_qs(urlsplit(flow.authorize_url).query)["state"][0]
    landing = browser.come_back(flow, f"{PUBLIC_URL}/api/auth/sso/{IDP}/callback?error=access_denied&state={state}")
    assert landing["error"] == "PROVIDER_DENIED"


def test_ticket_is_worthless_in_another_browser(browser, oidc, sso_app, service_headers):
    """Login CSRF: a ticket from the attacker's own sign-in, pushed into the victim's tab, meets
    the victim's binding (or none) and is refused."""
    login = new_login(oidc)
    flow = browser.start(IDP)
    browser.come_back(flow, oidc.approve(flow.authorize_url, login))
    victim_tab = browser.start(IDP)
    refused = browser.exchange(flow, binding=victim_tab.binding)
    assert (refused.status_code, refused.json["error"]["code"]) == (400, "BROWSER_MISMATCH")
    assert browser.exchange(flow).json["error"]["code"] == "TICKET_INVALID"


def test_verified_email_links_only_when_allowed_and_unverified_never_takes_over(browser, oidc, make_account):
    owner = make_account()
    # Unverified: the provider does not vouch for the address, so the existing account stays its owner's.
    login = new_login(oidc)
    oidc.users[login].update(email=owner.email, email_verified=False)
    flow, exchanged = oidc_sign_in(browser, oidc, login)
    data = exchanged.json["data"]
    assert data["status"] == "signup" and data["emailInUse"] is True
    created = sign_up(browser, flow, exchanged).json["data"]
    assert created["user"]["id"] != owner.id and created["user"]["email"] is None
    assert owner.call("GET", "/api/users/me/identities").json["data"]["items"] == []

    # Verified, and this provider's verified addresses are trusted: the account with that address
    # signs in, and whoever chose its password (never proven to own the address) is locked out.
    old_session = (owner.access_token, owner.refresh_token)
    login = new_login(oidc)
    oidc.users[login].update(email=owner.email, email_verified=True)
    _flow, exchanged = oidc_sign_in(browser, oidc, login)
    data = exchanged.json["data"]
    assert data["status"] == "signedIn" and data["user"]["id"] == owner.id
    assert owner.call("GET", "/api/users/profile").status_code == 401
    refreshed = owner.client.post("/api/users/token/refresh", headers=owner.service_headers,
                                  json={"refreshToken": old_session[1]})
    assert refreshed.status_code == 401
    password_login = owner.client.post("/api/users/login", headers=owner.service_headers,
                                       json={"username": owner.username, "password": owner.password})
    assert password_login.status_code == 401
    owner.use(data)
    listed = owner.call("GET", "/api/users/me/identities").json["data"]
    assert [i["provider"] for i in listed["items"]] == [IDP] and listed["hasPassword"] is False


def test_verified_email_without_auto_linking_never_signs_in_the_owner(browser, oidc, make_account):
    """Only the operator's word (autoLinkVerifiedEmail) lets a provider's verified e-mail find an account."""
    owner = make_account()
    login = new_login(oidc)
    oidc.users[login].update(email=owner.email, email_verified=True)
    flow, exchanged = oidc_sign_in(browser, oidc, login, provider=STRICT)
    data = exchanged.json["data"]
    assert data["status"] == "signup" and data["emailInUse"] is True and "accessToken" not in data
    created = sign_up(browser, flow, exchanged).json["data"]
    assert created["user"]["id"] != owner.id and created["user"]["email"] is None
    assert owner.call("GET", "/api/users/me/identities").json["data"]["items"] == []


def test_issuer_is_compared_as_discovery_names_it(auth_env):
    """An issuer ending with a slash (Auth0's) signs in; a token naming it without the slash does not."""
    stand_in = OidcStandIn(issuer_suffix="/")
    running = serve(stand_in.app())
    stand_in.url = running.url
    try:
        redirect_uri = f"{PUBLIC_URL}/api/auth/sso/slash/callback"
        stand_in.redirect_uris.add(redirect_uri)
        env = {**auth_env, "OIDC_PROVIDERS": "slash", "OIDC_SLASH_ISSUER": stand_in.issuer,
               "OIDC_SLASH_CLIENT_ID": CLIENT_ID, "OIDC_SLASH_CLIENT_SECRET": CLIENT_SECRET}
        (config,) = load_config(load_settings(env), env).oidc_providers
        provider = OidcProvider(config, redirect_uri, f"{PUBLIC_URL}/login")
        login = new_login(stand_in)

        def sign_in():
            flow = SignInFlow(provider="slash", state="s" * 43, nonce="n" * 43, code_verifier="v" * 64,
                              binding_hash="", intent="login", user_id=None, remember_me=False, next="/")
            query = parse_qs(urlsplit(stand_in.approve(provider.authorization_url(flow, ""), login)).query)
            return provider.complete(flow, {"code": query["code"][0], "state": flow.state})

        assert sign_in().subject == stand_in.users[login]["sub"]
        stand_in.next_token = {"iss": stand_in.url}
        with pytest.raises(IdTokenInvalid) as refused:
            sign_in()
        assert refused.value.code == "ISSUER_MISMATCH"
    finally:
        running.stop()


def test_disabled_provider_stops_new_and_started_sign_ins(browser, oidc, sso_app, service_headers, make_account):
    admin = make_account("admin")
    login = new_login(oidc)
    started = browser.start(IDP)
    redirect = oidc.approve(started.authorize_url, login)
    switch = f"/api/admin/auth/providers/{IDP}"
    assert browser.call("PUT", switch, admin.access_token, json={"enabled": False}).status_code == 200
    try:
        listed = browser.call("GET", "/api/auth/providers").json["data"]["providers"]
        assert [p["key"] for p in listed] == [STRICT, "wecom"]
        refused = browser.call("POST", f"/api/auth/sso/{IDP}/start", json={})
        assert (refused.status_code, refused.json["error"]["code"]) == (403, "PROVIDER_DISABLED")
        assert browser.come_back(started, redirect)["error"] == "PROVIDER_DISABLED"
        states = browser.call("GET", "/api/admin/auth/providers", admin.access_token).json["data"]["providers"]
        assert {p["key"]: p["enabled"] for p in states} == {IDP: False, STRICT: True, "wecom": True}
    finally:
        assert browser.call("PUT", switch, admin.access_token, json={"enabled": True}).status_code == 200
    _flow, exchanged = oidc_sign_in(browser, oidc, login)
    assert exchanged.json["data"]["status"] == "signup"


def test_admin_group_maps_to_the_admin_role_both_ways(browser, oidc):
    login = new_login(oidc, groups=["staff", "platform-admins"])
    flow, exchanged = oidc_sign_in(browser, oidc, login)
    created = sign_up(browser, flow, exchanged).json["data"]
    assert created["user"]["role"] == "admin"
    old_token = created["accessToken"]
    oidc.users[login]["groups"] = ["staff"]
    _flow, again = oidc_sign_in(browser, oidc, login)
    assert again.json["data"]["user"]["role"] == "user"
    assert browser.call("GET", "/api/admin/users", old_token).status_code == 401, "the admin token stopped"


# Linking and unlinking


def test_signed_in_user_links_after_confirming_and_then_signs_in_with_it(browser, oidc, make_account):
    account = make_account()
    login = new_login(oidc)
    flow = browser.start(IDP, token=account.access_token, intent="link", next="/profile")
    browser.come_back(flow, oidc.approve(flow.authorize_url, login))
    pending = browser.exchange(flow).json["data"]
    assert pending["status"] == "link" and pending["next"] == "/profile"
    assert "accessToken" not in pending
    assert account.call("GET", "/api/users/me/identities").json["data"]["items"] == [], "nothing before confirming"

    stranger = make_account()
    body = {"ticket": pending["ticket"], "binding": flow.binding}
    wrong = browser.call("POST", "/api/auth/sso/link", stranger.access_token, json=body)
    assert wrong.json["error"]["code"] == "TICKET_INVALID"
    linked = browser.call("POST", "/api/auth/sso/link", account.access_token, json=body)
    assert linked.status_code == 200, linked.json
    assert [i["provider"] for i in linked.json["data"]["items"]] == [IDP]

    _flow, exchanged = oidc_sign_in(browser, oidc, login)
    assert exchanged.json["data"]["user"]["id"] == account.id

    # The identity cannot be linked to a second account.
    flow = browser.start(IDP, token=stranger.access_token, intent="link")
    browser.come_back(flow, oidc.approve(flow.authorize_url, login))
    assert browser.exchange(flow).json["error"]["code"] == "IDENTITY_LINKED_ELSEWHERE"


def test_link_needs_a_session(browser):
    refused = browser.call("POST", f"/api/auth/sso/{IDP}/start", json={"intent": "link"})
    assert (refused.status_code, refused.json["error"]["code"]) == (401, "NO_TOKEN")


def test_unlink_keeps_a_way_to_sign_in(browser, oidc, make_account):
    login = new_login(oidc)
    flow, exchanged = oidc_sign_in(browser, oidc, login)
    session = sign_up(browser, flow, exchanged, username=login).json["data"]
    token = session["accessToken"]
    identity_id = browser.call("GET", "/api/users/me/identities", token).json["data"]["items"][0]["id"]
    last = browser.call("DELETE", f"/api/users/me/identities/{identity_id}", token)
    assert (last.status_code, last.json["error"]["code"]) == (409, "LAST_SIGN_IN_METHOD")
    deleting = browser.call("DELETE", "/api/users/me", token, json={"password": "whatever1"})
    assert deleting.json["error"]["code"] == "PASSWORD_NOT_SET"

    # The owner sets a first password (no current one to give); then the identity may go.
    set_password = browser.call("PUT", "/api/users/password", token, json={"newPassword": "chosen123"})
    assert set_password.status_code == 200, set_password.json
    token = set_password.json["data"]["accessToken"]
    other = make_account()
    assert other.call("DELETE", f"/api/users/me/identities/{identity_id}").json["error"]["code"] == \
        "IDENTITY_NOT_FOUND"
    removed = browser.call("DELETE", f"/api/users/me/identities/{identity_id}", token)
    assert removed.status_code == 200 and removed.json["data"]["items"] == []
    assert browser.call("POST", "/api/users/login", json={"username": login, "password": "chosen123"}).status_code == 200
    # The identity is free again. Without a verified e-mail it is no way into the old account.
    oidc.users[login]["email_verified"] = False
    _flow, exchanged = oidc_sign_in(browser, oidc, login)
    assert exchanged.json["data"]["status"] == "signup" and exchanged.json["data"]["emailInUse"] is True


def test_admins_see_a_users_identities(browser, oidc, make_account):
    admin, user = make_account("admin"), make_account()
    assert browser.call("GET", f"/api/admin/users/{user.id}/identities", admin.access_token).json["data"]["items"] == []
    assert browser.call("GET", f"/api/admin/users/{user.id}/identities", user.access_token).status_code == 403
    login = new_login(oidc)
    flow = browser.start(IDP, token=user.access_token, intent="link")
    browser.come_back(flow, oidc.approve(flow.authorize_url, login))
    pending = browser.exchange(flow).json["data"]
    browser.call("POST", "/api/auth/sso/link", user.access_token, json={"ticket": pending["ticket"],
                                                                         "binding": flow.binding})
    items = browser.call("GET", f"/api/admin/users/{user.id}/identities", admin.access_token).json["data"]["items"]
    assert [(i["provider"], i["email"]) for i in items] == [(IDP, f"{login}@corp.example")]


# WeCom


@pytest.fixture
def fresh_wecom_token(sso_app, wecom):
    """No access token cached yet (the Redis database outlives one backend's tests)."""
    sso_app.extensions["redis"].delete(f"sso:wecom:token:{CORP_ID}:{AGENT_ID}")
    before = wecom.gettoken_calls
    return lambda: wecom.gettoken_calls - before


def wecom_sign_in(browser: Browser, wecom: WeComStandIn, userid: str | None) -> tuple[Flow, dict[str, str]]:
    flow = browser.start("wecom")
    return flow, browser.come_back(flow, wecom.scan(flow.authorize_url, userid))


def test_wecom_signs_in_with_the_token_fetched_once(browser, wecom, fresh_wecom_token):
    userid = f"zhang{uuid.uuid4().hex[:6]}"
    wecom.add_member(userid, name="张三", department=[2, 7], position="产品经理",
                     avatar="https://wework.qpic.cn/wwhead/abc/0")
    flow, landing = wecom_sign_in(browser, wecom, userid)
    assert flow.authorize_url.startswith(f"{wecom.url}/wwlogin/sso/login?login_type=CorpApp&appid={CORP_ID}")
    exchanged = browser.exchange(flow)
    data = exchanged.json["data"]
    assert data["status"] == "signup" and data["suggestedUsername"] == userid
    identity = data["identity"]
    assert (identity["displayName"], identity["department"], identity["position"]) == ("张三", "2,7", "产品经理")
    assert identity["avatarUrl"] == "https://wework.qpic.cn/wwhead/abc/0"
    session = sign_up(browser, flow, exchanged).json["data"]
    assert session["user"]["hasPassword"] is False and session["logoutUrl"] is None

    for _ in range(3):
        again_flow, _landing = wecom_sign_in(browser, wecom, userid)
        assert browser.exchange(again_flow).json["data"]["user"]["id"] == session["user"]["id"]
    assert fresh_wecom_token() == 1, "one gettoken for four sign-ins"

    wecom.expire_tokens()  # WeCom ended the token early: it is fetched again, once, and the sign-in goes on
    again_flow, _landing = wecom_sign_in(browser, wecom, userid)
    assert browser.exchange(again_flow).json["data"]["status"] == "signedIn"
    assert fresh_wecom_token() == 2


def test_wecom_inside_the_client_uses_oauth(browser, wecom):
    userid = f"li{uuid.uuid4().hex[:6]}"
    wecom.members = {userid: wecom.add_member(userid, name="李四", avatar="javascript:alert(1)"), **wecom.members}
    flow = browser.start("wecom", user_agent=WECOM_UA)
    assert flow.authorize_url.startswith(f"{wecom.url}/connect/oauth2/authorize?appid={CORP_ID}")
    assert flow.authorize_url.endswith("#wechat_redirect") and "scope=snsapi_base" in flow.authorize_url
    redirect = requests.get(flow.authorize_url.split("#")[0], allow_redirects=False, timeout=10).headers["Location"]
    landing = browser.come_back(flow, redirect)
    identity = browser.exchange(flow).json["data"]["identity"]
    assert identity["displayName"] == "李四", landing
    assert identity["avatarUrl"] is None, "only an http(s) picture address is kept"


def test_wecom_refusals_read_in_chinese(browser, wecom):
    userid = f"wang{uuid.uuid4().hex[:6]}"
    wecom.add_member(userid, name="王五")
    flow = browser.start("wecom")
    redirect = wecom.scan(flow.authorize_url, userid)
    assert "ticket" in browser.come_back(flow, redirect)
    assert browser.come_back(flow, redirect)["error"] == "STATE_INVALID"

    other = browser.start("wecom")
    state = parse_qs(urlsplit(other.authorize_url).query)["state"][0]
    code = parse_qs(urlsplit(redirect).query)["code"][0]
    replayed = browser.come_back(other, f"{PUBLIC_URL}/api/auth/sso/wecom/callback?code={code}&state={state}")
    assert replayed["error"] == "CODE_REJECTED" and "授权码无效" in replayed["message"]

    _flow, outsider = wecom_sign_in(browser, wecom, None)
    assert outsider["error"] == "WECOM_NOT_MEMBER" and "本企业的成员" in outsider["message"]


# The term list at sign-up


def test_sso_sign_up_checks_the_username_and_the_providers_name_against_the_term_list(browser, oidc, sso_app,
                                                                                        auth_env):
    from services.safety.app import create_app as create_safety_app
    from shared.config import load_settings
    from tests.safety_fixtures import MODERATOR, audit_rows, made_up_term

    safety = create_safety_app(load_settings(auth_env))
    try:
        sso_app.extensions["auth"].content_filter.refresh_seconds = 0
        word, name_term = f"zq{uuid.uuid4().hex[:8]}", made_up_term("n")
        for text in (word, name_term):
            safety.extensions["safety_terms"].create(MODERATOR, {"text": text, "kind": "term", "category": "abuse",
                                                                 "severity": "block", "note": ""})
        login = f"p{uuid.uuid4().hex[:8]}"
        oidc.add_user(login, name=f"小{name_term}", email=f"{login}@corp.example", email_verified=True)
        flow, exchanged = oidc_sign_in(browser, oidc, login)

        refused = sign_up(browser, flow, exchanged, username=f"x{word.upper()}")
        assert refused.status_code == 422 and refused.json["error"]["code"] == "CONTENT_REJECTED"
        assert refused.json["error"]["details"]["field"] == "username" and word not in refused.json["error"]["message"]
        created = sign_up(browser, flow, exchanged, username=login)  # the sign-up stays open for another name
        assert created.status_code == 201, created.json
        assert created.json["data"]["user"]["displayName"] is None, "the provider's blocked name is not carried over"
        blocked = {row["source"] for row in audit_rows(safety, action="blocked", subject="user:new")
                   if word in row["excerpt"].lower() or name_term in row["excerpt"]}
        assert blocked == {"auth.username", "auth.displayName"}
    finally:
        safety.extensions["db"].dispose()
