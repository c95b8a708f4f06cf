"""The web client in a real browser against the real platform.

Starts the platform the way ``make run`` does (``python -m deploy.local run``, ComfyUI
emulator included) with ``WEB_ROOT`` pointing at the built client in ``web/dist``, then
drives Debian's Chromium through Playwright: register, create two images and watch the
progress, cancel a third mid-run and see the refund, save, find it in the gallery, a
second user likes it, profile edit / avatar / password, and an admin grant that shows up
in the first user's balance without a reload. Screenshots at 1440×900, 768×1024 and
390×844 go to ``test-artifacts/``; any console error or uncaught page error fails.

A call to an API route the server does not have fails the test too.
"""
from __future__ import annotations

import io
import re
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

from tests.platform import Platform, start_platform

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "web" / "dist"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORTS = {"desktop": (1440, 900), "tablet": (768, 1024), "phone": (390, 844)}
PASSWORD = "correct-horse-1"
NEW_PASSWORD = "battery-staple-2"
TIMEOUT_MS = 30_000

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)", allow_module_level=True)
if not (DIST / "index.html").exists():
    pytest.skip("web/dist/index.html is missing (cd web && npm ci && npm run build)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@pytest.fixture
def running(tmp_path_factory, settings_env, platform_database_url):
    with start_platform(tmp_path_factory, settings_env, platform_database_url, WEB_ROOT=str(DIST), EMULATOR_STEP_DELAY="0.1") as platform:
        yield platform


class Browser:
    """One Chromium with a context per user; collects console and page errors."""

    def __init__(self, playwright, platform: Platform) -> None:
        self.platform = platform
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.errors: list[str] = []
        self.missing_routes: set[str] = set()
        self.pages: list = []

    def new_page(self, viewport=VIEWPORTS["desktop"]):
        context = self.browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                           base_url=self.platform.base_url, locale="zh-CN")
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=self.platform.base_url)
        page = context.new_page()
        self.pages.append(page)
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", lambda msg: self._console(msg))
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("response", lambda response: self._response(response))
        return page

    def _response(self, response) -> None:
        path = urlparse(response.url).path
        if response.status in (404, 405) and path.startswith("/api/"):
            try:
                body = response.json()
            except Exception:  # not JSON: no such route
                body = None
            code = (body or {}).get("error", {}).get("code") if isinstance(body, dict) else None
            if code in (None, "NOT_FOUND", "METHOD_NOT_ALLOWED", "HTTP_404", "ROUTE_NOT_FOUND"):
                self.missing_routes.add(f"{response.request.method} {path}")

    def _console(self, msg) -> None:
        if msg.type != "error":
            return
        url = urlparse((msg.location or {}).get("url", "")).path
        text = msg.text
        if text.startswith("Failed to load resource") and url.startswith("/api/"):
            # An HTTP error status is the API's answer, asserted by the scenario itself; a
            # route the server does not have yet is reported at the end.
            return
        self.errors.append(f"console error: {text} ({url})")

    def close(self) -> None:
        self.browser.close()


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)


def balance(page) -> int:
    text = page.get_by_test_id("balance").inner_text()
    return int(re.sub(r"\D", "", text) or -1)


def wait_balance(page, value: int) -> None:
    """Wait for the shell's live balance to read ``value`` (a locator wait: no eval under the real CSP)."""
    sync_api.expect(page.get_by_test_id("balance")).to_have_text(re.compile(rf"^\D*{value}\D*$"), timeout=TIMEOUT_MS)


def register(page, name: str) -> None:
    page.goto("/register")
    page.locator("input[name=username]").fill(name)
    page.locator("input[name=email]").fill(f"{name}@example.com")
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("input[name=confirm]").fill(PASSWORD)
    page.get_by_role("button", name="注册并开始创作").click()
    page.wait_for_url("**/dashboard")
    wait_balance(page, 500)


def login(page, identity: str, password: str) -> None:
    page.goto("/login")
    page.locator("input[name=username]").fill(identity)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name="登录").last.click()
    page.wait_for_url("**/dashboard")


def set_steps(page, steps: int) -> None:
    """Move the steps slider with the keyboard to an exact value."""
    handle = page.get_by_test_id("steps").locator(".el-slider__button-wrapper")
    handle.focus()
    page.keyboard.press("Home")
    for _ in range(steps - 1):
        page.keyboard.press("ArrowRight")


def submit_job(page, prompt: str, batch: int, steps: int) -> None:
    page.locator("input[data-testid=prompt], textarea[data-testid=prompt], [data-testid=prompt] input").first.fill(prompt)
    page.get_by_test_id("batch").get_by_text(str(batch), exact=True).click()
    set_steps(page, steps)
    page.get_by_test_id("submit").click()


def test_browser_journey(running: Platform):
    suffix = uuid.uuid4().hex[:6]
    alice, bob, admin = f"alice_{suffix}", f"bob_{suffix}", f"admin_{suffix}"
    with sync_api.sync_playwright() as playwright:
        browser = Browser(playwright, running)
        try:
            _journey(browser, running, alice, bob, admin)
        except Exception:
            for index, page in enumerate(browser.pages):
                shoot(page, f"failure-{index}")
            raise
        finally:
            browser.close()
        assert not browser.missing_routes, f"the client called routes the server does not have: {browser.missing_routes}"
        assert not browser.errors, "\n".join(browser.errors)


def _journey(browser: Browser, platform: Platform, alice: str, bob: str, admin: str) -> None:
    # Anonymous gallery, the demo banner, and the 404 page.
    page = browser.new_page()
    page.goto("/gallery")
    page.get_by_text("创意画廊").first.wait_for()
    page.get_by_text("演示环境").wait_for()
    page.goto("/no/such/page")
    page.get_by_role("heading", name="页面不存在").wait_for()

    # Registration with live rule hints, then the dashboard with the live balance.
    page.goto("/register")
    page.locator("input[name=password]").fill("short")
    assert page.locator(".rules li.ok").count() == 1  # only "at least one letter"
    register(page, alice)
    shoot(page, "dashboard-desktop")

    # Create two images and watch real progress.
    page.goto("/create")
    page.get_by_test_id("model").wait_for()
    assert page.get_by_test_id("cost").inner_text() == "15"
    submit_job(page, "a red fox in the snow", batch=2, steps=30)
    card = page.locator("[data-testid^=job-]").first
    page.get_by_test_id("job-steps").first.wait_for()
    assert re.search(r"步骤 \d+ / 30", page.get_by_test_id("job-steps").first.inner_text())
    page.wait_for_selector("[data-status=succeeded]")
    assert card.get_by_test_id("result-image").count() == 2
    wait_balance(page, 470)
    shoot(page, "create-results-desktop")

    # A third image, cancelled mid-run: the hold comes back.
    submit_job(page, "a slow lighthouse at dusk", batch=1, steps=60)
    page.get_by_test_id("job-progress").first.wait_for()
    wait_balance(page, 455)
    page.get_by_test_id("cancel-job").first.click()
    page.locator(".el-message-box").get_by_role("button", name="取消任务").click()
    page.get_by_test_id("job-cancelled").first.wait_for()
    wait_balance(page, 470)
    assert "退还 15 积分" in page.get_by_test_id("job-cancelled").first.inner_text()

    # Save the first image of the finished job as a public work.
    done = page.locator("[data-status=succeeded]").first
    done.get_by_test_id("result-image").first.hover()
    done.get_by_test_id("save-one").first.click()
    page.locator("input[data-testid=save-title], textarea[data-testid=save-title], [data-testid=save-title] input").first.fill("Red fox")
    page.get_by_test_id("save-confirm").click()
    page.get_by_text("已保存 1 个作品").wait_for()

    # The gallery shows it, also to someone signed out.
    page.goto("/gallery")
    page.get_by_test_id("work-card").filter(has_text="Red fox").first.wait_for()
    shoot(page, "gallery-desktop")
    page.get_by_test_id("work-card").filter(has_text="Red fox").first.click()
    page.locator(".el-dialog").get_by_text("a red fox in the snow").wait_for()
    page.keyboard.press("Escape")

    # Bob likes it from his own browser context.
    bob_page = browser.new_page(VIEWPORTS["phone"])
    register(bob_page, bob)
    bob_page.goto("/gallery")
    work_card = bob_page.get_by_test_id("work-card").filter(has_text="Red fox").first
    work_card.get_by_test_id("like").click()
    sync_api.expect(work_card.get_by_test_id("like")).to_have_class(re.compile(r"\bliked\b"))
    shoot(bob_page, "gallery-phone")

    # Alice's bell shows Bob's like.
    sync_api.expect(page.get_by_test_id("bell").locator("sup")).to_have_text("1")

    # Profile: edit, avatar, password change.
    page.goto("/profile")
    page.get_by_test_id("profile-edit").click()
    page.locator("input[data-testid=profile-bio], textarea[data-testid=profile-bio], [data-testid=profile-bio] input").first.fill("I paint foxes.")
    page.get_by_test_id("profile-save").click()
    page.get_by_text("已保存").first.wait_for()
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (37, 99, 235)).save(buffer, "PNG")
    with page.expect_response(lambda r: r.url.endswith("/api/users/avatar")) as avatar_response:
        page.get_by_test_id("avatar-input").set_input_files({"name": "me.png", "mimeType": "image/png", "buffer": buffer.getvalue()})
    assert avatar_response.value.ok, avatar_response.value.text()
    page.get_by_text("头像已更新").wait_for()
    page.get_by_role("tab", name="账户安全").click()
    page.locator("input[data-testid=pwd-current], textarea[data-testid=pwd-current], [data-testid=pwd-current] input").first.fill(PASSWORD)
    page.locator("input[data-testid=pwd-new], textarea[data-testid=pwd-new], [data-testid=pwd-new] input").first.fill(NEW_PASSWORD)
    page.locator("input[data-testid=pwd-confirm], textarea[data-testid=pwd-confirm], [data-testid=pwd-confirm] input").first.fill(NEW_PASSWORD)
    with page.expect_response(lambda r: r.url.endswith("/api/users/password")) as password_response:
        page.get_by_test_id("pwd-submit").click()
    assert password_response.value.ok, password_response.value.text()
    page.get_by_text("密码已修改").wait_for()
    page.get_by_role("tab", name="积分").click()
    page.get_by_test_id("ledger").wait_for()
    shoot(page, "profile-credits-desktop")

    # An admin grants credits; Alice's balance updates live, without a reload.
    created = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "services.auth.app:create_app", "auth", "create-admin", admin,
         f"{admin}@example.com", "--password", PASSWORD],
        env=platform.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr[-1000:]
    admin_page = browser.new_page(VIEWPORTS["tablet"])
    login(admin_page, admin, PASSWORD)
    admin_page.goto("/admin")
    admin_page.locator("input[data-testid=admin-search], textarea[data-testid=admin-search], [data-testid=admin-search] input").first.fill(alice)
    admin_page.get_by_test_id(f"grant-{alice}").click()
    admin_page.locator("input[data-testid=adjust-amount], textarea[data-testid=adjust-amount], [data-testid=adjust-amount] input").first.fill("100")
    admin_page.locator("input[data-testid=adjust-reason], textarea[data-testid=adjust-reason], [data-testid=adjust-reason] input").first.fill("browser test")
    admin_page.get_by_test_id("adjust-submit").click()
    wait_balance(page, 570)
    admin_page.locator(".el-dialog").filter(has=admin_page.get_by_test_id("adjust-submit")).wait_for(state="hidden")
    shoot(admin_page, "admin-tablet")

    # The same pages at the other sizes.
    for label, (width, height) in VIEWPORTS.items():
        page.set_viewport_size({"width": width, "height": height})
        for path, name in (("/dashboard", "dashboard"), ("/create", "create"), ("/gallery", "gallery"),
                           ("/my-works", "my-works"), ("/profile", "profile"),
                           ("/notifications", "notifications")):
            page.goto(path)
            page.wait_for_load_state("networkidle")
            shoot(page, f"{name}-{label}")
        if label == "phone":
            page.get_by_role("button", name="菜单").click()
            page.locator(".nav-drawer").get_by_text("我的作品").wait_for()
            page.wait_for_timeout(500)  # let the drawer finish sliding in before the picture
            shoot(page, "drawer-phone")

    # Reload keeps the session and the live balance.
    page.reload()
    wait_balance(page, 570)
