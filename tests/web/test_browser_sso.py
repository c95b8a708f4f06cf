"""Single sign-on in a real browser against the real platform: a test OpenID Connect provider
and a WeCom stand-in, both served over HTTP by this test, are configured into the platform
(``make run``'s way of starting it). In Chromium, in Chinese: the login page shows both
providers; a new OIDC identity creates an account (no password, the signup bonus); the
profile links WeCom and unlinks the OIDC identity, never the last way in; signing out offers
the provider's logout; WeCom signs the same person in again; a forged callback is explained
in Chinese; an administrator sees the identities and turns a provider off, and its button
goes away, and with none on the login page shows no single sign-on."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from shared.embedded import free_port
from tests.conftest import serve
from tests.platform import Platform, start_platform
from tests.sso_standins import AGENT_ID, CLIENT_ID, CLIENT_SECRET, CORP_ID, CORP_SECRET, OidcStandIn, WeComStandIn
from tests.web.test_browser import (PASSWORD, ROOT, VIEWPORTS, Browser, DIST, fill, login, no_horizontal_overflow,
                                    shoot, sync_api, wait_balance)

pytestmark = pytest.mark.e2e


@pytest.fixture
def providers():
    oidc, wecom = OidcStandIn(), WeComStandIn()
    servers = [serve(oidc.app()), serve(wecom.app())]
    oidc.url, wecom.url = servers[0].url, servers[1].url
    yield oidc, wecom
    for server in servers:
        server.stop()


@pytest.fixture
def running(tmp_path_factory, settings_env, platform_database_url, providers):
    oidc, wecom = providers
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    oidc.redirect_uris.add(f"{public_url}/api/auth/sso/corp/callback")
    corp = [{"key": "corp", "name": "公司账号", "issuer": oidc.url, "clientId": CLIENT_ID}]
    with start_platform(tmp_path_factory, settings_env, platform_database_url, WEB_ROOT=str(DIST),
                        GATEWAY_PORT=str(port), PUBLIC_URL=public_url, OIDC_PROVIDERS=json.dumps(corp),
                        OIDC_CORP_CLIENT_SECRET=CLIENT_SECRET, WECHAT_CORP_ID=CORP_ID, WECHAT_AGENT_ID=AGENT_ID,
                        WECHAT_SECRET=CORP_SECRET, WECHAT_API_URL=wecom.url,
                        WECHAT_QR_LOGIN_URL=f"{wecom.url}/wwlogin/sso/login",
                        WECHAT_OAUTH_URL=f"{wecom.url}/connect/oauth2/authorize") as platform:
        yield platform


def test_single_sign_on_in_the_browser(running: Platform, providers):
    oidc, wecom = providers
    suffix = uuid.uuid4().hex[:6]
    login_name, userid = f"mei{suffix}", f"zhangsan{suffix}"
    oidc.add_user(login_name, name="王美丽", email=f"{login_name}@corp.example", email_verified=True)
    wecom.add_member(userid, name="张三", department=[2, 5], position="设计师")
    with sync_api.sync_playwright() as playwright:
        browser = Browser(playwright, running)
        try:
            _journey(browser, running, oidc, wecom, login_name, userid, suffix)
        except Exception:
            for index, page in enumerate(browser.pages):
                shoot(page, f"sso-failure-{index}")
            print("\n".join(browser.errors))
            raise
        finally:
            browser.close()
        assert not browser.missing_routes, f"the client called routes the server does not have: {browser.missing_routes}"
        assert not browser.errors, "\n".join(browser.errors)


def _journey(browser: Browser, platform: Platform, oidc: OidcStandIn, wecom: WeComStandIn, login_name: str,
             userid: str, suffix: str) -> None:
    # The login page offers both providers, and fits a phone.
    phone = browser.new_page(VIEWPORTS["phone"])
    phone.goto("/login")
    phone.get_by_test_id("sso-corp").wait_for()
    sync_api.expect(phone.get_by_test_id("sso-wecom")).to_contain_text("使用企业微信登录")
    no_horizontal_overflow(phone, "login with providers")
    shoot(phone, "sso-login-phone")

    # A new identity at the OIDC provider: sign up with the suggested name, no password, 500 credits.
    page = browser.new_page()
    page.goto("/login")
    page.get_by_test_id("sso-corp").click()
    page.wait_for_url(f"{oidc.url}/authorize?**")
    page.locator("#approve").click()
    page.get_by_test_id("sso-identity").get_by_text("王美丽").wait_for()
    assert "ticket" not in page.url, "the ticket leaves the address bar"
    username = page.locator("input[data-testid=sso-username], [data-testid=sso-username] input").first
    sync_api.expect(username).to_have_value(login_name)
    shoot(page, "sso-signup-desktop")
    page.get_by_test_id("sso-create").click()
    page.wait_for_url("**/dashboard")
    wait_balance(page, 500)

    # The profile: no password yet, the identity cannot be removed; link WeCom, then remove the OIDC one.
    page.goto("/profile?tab=security")
    page.get_by_test_id("no-password").wait_for()
    page.get_by_test_id("identity-corp").wait_for()
    sync_api.expect(page.get_by_test_id("unlink-corp")).to_be_disabled()
    page.get_by_test_id("link-wecom").click()
    page.wait_for_url(f"{wecom.url}/wwlogin/sso/login?**")
    page.locator("#approve").click()
    page.get_by_test_id("sso-identity").get_by_text("张三").wait_for()
    page.get_by_test_id("sso-confirm-link").click()
    page.wait_for_url("**/profile?tab=security")
    sync_api.expect(page.get_by_test_id("identity-wecom")).to_contain_text("设计师")
    page.get_by_test_id("unlink-corp").click()
    page.locator(".el-message-box").get_by_role("button", name="解除关联").click()
    page.get_by_test_id("identity-corp").wait_for(state="detached")
    shoot(page, "sso-profile-identities-desktop")

    # Signing out offers the provider's logout page (the session began at the OIDC provider).
    page.get_by_test_id("user-menu").click()
    page.get_by_role("menuitem", name="退出登录").click()
    page.locator(".el-message-box").get_by_role("button", name="退出登录").click()
    page.wait_for_url("**/login")
    link = page.get_by_test_id("provider-logout").get_by_role("link")
    assert link.get_attribute("href").startswith(f"{oidc.url}/logout?client_id={CLIENT_ID}")

    # WeCom signs the same person in again, straight to the dashboard.
    page.get_by_test_id("sso-wecom").click()
    page.locator("#approve").click()
    page.wait_for_url("**/dashboard")
    wait_balance(page, 500)

    # A forged callback (a state this browser never started) is refused, in Chinese.
    page.goto(f"/api/auth/sso/wecom/callback?code=stolen&state=forged{suffix}")
    sync_api.expect(page.get_by_test_id("sso-error")).to_contain_text("登录链接无效")
    shoot(page, "sso-error-desktop")

    # An administrator sees the identity and turns the OIDC provider off: its button goes away.
    admin = f"admin_{suffix}"
    created = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "services.auth.app:create_app", "auth", "create-admin", admin,
         f"{admin}@example.com", "--password", PASSWORD],
        env=platform.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr[-1000:]
    admin_page = browser.new_page(VIEWPORTS["tablet"])
    login(admin_page, admin, PASSWORD)
    admin_page.goto("/admin")
    # The list reloads once the search is sent: a menu opened on the row before that would close.
    with admin_page.expect_response(lambda r: "/api/admin/users" in r.url and "search=" in r.url
                                    and "search=&" not in r.url):
        fill(admin_page, "admin-search", login_name)
    admin_page.get_by_test_id(f"more-{login_name}").click()  # at tablet width the rarer actions are in a menu
    admin_page.get_by_test_id(f"identities-{login_name}").click()
    sync_api.expect(admin_page.get_by_test_id("admin-identities")).to_contain_text(userid)
    admin_page.keyboard.press("Escape")
    admin_page.get_by_role("tab", name="登录方式").click()
    admin_page.get_by_test_id("switch-corp").click()
    admin_page.get_by_text("已保存").first.wait_for()
    shoot(admin_page, "sso-admin-providers-tablet")
    phone.goto("/login")
    phone.get_by_test_id("sso-wecom").wait_for()
    assert phone.get_by_test_id("sso-corp").count() == 0

    # With no provider on, the login page shows no single sign-on at all (once it has asked).
    with admin_page.expect_response(lambda r: r.request.method == "PUT" and r.url.endswith("/providers/wecom")) as put:
        admin_page.get_by_test_id("switch-wecom").click()
    assert put.value.status == 200
    with phone.expect_response(lambda r: r.url.endswith("/api/auth/providers")) as listed:
        phone.goto("/login")
    assert listed.value.json()["data"]["providers"] == []
    phone.locator("input[name=username]").wait_for()
    phone.wait_for_load_state("networkidle")
    assert phone.get_by_test_id("sso-buttons").count() == 0
