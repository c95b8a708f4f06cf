"""The web client in a real browser against the real platform.

Starts the platform the way ``make run`` does (``python -m deploy.local run``, ComfyUI
emulator with live previews included) with ``WEB_ROOT`` pointing at the built client in
``web/dist``, then drives Debian's Chromium through Playwright: register with a Chinese
display name that round-trips (profile, menu, gallery cards, admin lists), create on a phone
and see the progress without scrolling, an administrator describing a model (names, preview,
recommended settings) that the create page applies when it is picked, server presets, images
at their own aspect ratio, the live preview, cancel with the refund, a fault of the emulator
said in Chinese with the refund, Ctrl+Enter, the history's search and "reuse" refilling the
form exactly, every workflow's declared parameters with their help, the gallery lightbox
(reproduction data, arrows, copy prompt), a like, the credits page with one row per job,
dark mode, profile edits with a wrong password shown on its field, and the admin console (a
grant shown live and in the users table, owners of jobs, an admin cancel with the refund,
hiding and restoring a work from the hidden list, who redeemed a code). Every page is
photographed at 1440×900, 768×1024 and 390×844 in Chinese and English into
``test-artifacts/`` and checked for horizontal overflow at 390 px (the credits ledger, by job and
entry by entry, and My works in its table view also inside themselves at every size); any console error or
uncaught page error fails; the first route stays within the bundle budget.

A call to an API route the server does not have fails the test too.
"""
from __future__ import annotations

import io
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest
import requests
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
# Assertions wait as long as actions do: on a busy machine a page can take more than expect's 5 s.
sync_api.expect.set_options(timeout=TIMEOUT_MS)


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
    # Transitions finished: a badge or tag caught mid-fade after a language switch looks faded.
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False, animations="disabled")


def balance(page) -> int:
    text = page.get_by_test_id("balance").inner_text()
    return int(re.sub(r"\D", "", text) or -1)


def wait_balance(page, value: int) -> None:
    """Wait for the shell's live balance to read ``value`` (a locator wait: no eval under the real CSP)."""
    sync_api.expect(page.get_by_test_id("balance")).to_have_text(re.compile(rf"^\D*{value}\D*$"), timeout=TIMEOUT_MS)


def register(page, name: str, display_name: str = "") -> None:
    page.goto("/register")
    if display_name:
        page.locator("input[name=displayName]").fill(display_name)
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
    page.get_by_role("button", name="登录", exact=True).last.click()
    page.wait_for_url("**/dashboard")


def fill(page, test_id: str, value: str) -> None:
    page.locator(f"input[data-testid={test_id}], textarea[data-testid={test_id}], [data-testid={test_id}] input, "
                 f"[data-testid={test_id}] textarea").first.fill(value)


def input_of(page, test_id: str):
    """The text field of a component (Element Plus puts the test id on the input, or on its wrapper)."""
    return page.locator(f"input[data-testid={test_id}], textarea[data-testid={test_id}], [data-testid={test_id}] input, "
                        f"[data-testid={test_id}] textarea").first


def field_value(page, test_id: str) -> str:
    return page.locator(f"input[data-testid={test_id}], textarea[data-testid={test_id}], [data-testid={test_id}] input, "
                        f"[data-testid={test_id}] textarea").first.input_value()


def set_steps(page, steps: int) -> None:
    """Move the steps slider with the keyboard to an exact value."""
    handle = page.get_by_test_id("steps").locator(".el-slider__button-wrapper")
    handle.focus()
    page.keyboard.press("Home")
    for _ in range(steps - 1):
        page.keyboard.press("ArrowRight")


def prepare_job(page, prompt: str, batch: int, steps: int, aspect: str = "1:1") -> None:
    fill(page, "prompt", prompt)
    page.get_by_test_id("batch").get_by_text(str(batch), exact=True).click()
    page.get_by_test_id(f"aspect-{aspect}").click()
    set_steps(page, steps)


def submit_job(page, prompt: str, batch: int, steps: int, aspect: str = "1:1") -> None:
    prepare_job(page, prompt, batch, steps, aspect)
    page.get_by_test_id("submit").click()


def job_card(page, prompt: str):
    return page.locator("[data-status]").filter(has_text=prompt).first


def box_and_natural_ratio(locator) -> tuple[float, float]:
    """The rendered box's width/height and the picture's own, of an <img>."""
    w, h, nw, nh = locator.evaluate(
        "el => { const r = el.getBoundingClientRect(); return [r.width, r.height, el.naturalWidth, el.naturalHeight] }")
    assert w > 0 and h > 0 and nw > 0 and nh > 0, (w, h, nw, nh)
    return w / h, nw / nh


def assert_aspect(locator, expected: float) -> None:
    locator.scroll_into_view_if_needed()
    sync_api.expect(locator).to_be_visible()
    locator.evaluate("el => el.decode ? el.decode() : null")
    box, natural = box_and_natural_ratio(locator)
    assert abs(box - expected) / expected < 0.03, f"box ratio {box:.3f}, expected {expected:.3f}"
    assert abs(natural - expected) / expected < 0.03, f"picture ratio {natural:.3f}, expected {expected:.3f}"


def no_horizontal_overflow(page, what: str) -> None:
    width = page.viewport_size["width"]
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{what}: the page is {scroll} px wide in a {width} px screen"


def no_inner_overflow(locator, what: str) -> None:
    """The element and each scroll wrapper inside it (an el-table's ``.el-scrollbar__wrap``) fit their own
    width: nothing has to be swiped sideways inside the page either."""
    wide = locator.evaluate("""el => [el, ...el.querySelectorAll('*')]
        .filter((e) => e === el || e.matches('.el-table__body-wrapper')
          || ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
        .filter((e) => e.scrollWidth > e.clientWidth)
        .map((e) => `${e.className || e.tagName}: ${e.scrollWidth} px in ${e.clientWidth}`)""")
    assert not wide, f"{what} scrolls sideways inside itself: {wide}"


def api(page, method: str, path: str, body=None):
    """An API call with this page's session."""
    token = page.evaluate("JSON.parse(localStorage.getItem('aigc.session') || sessionStorage.getItem('aigc.session')).accessToken")
    response = page.request.fetch(path, method=method, headers={"Authorization": f"Bearer {token}"}, data=body)
    assert response.ok, response.text()
    return response.json()["data"]


def set_language(page, locale: str) -> None:
    page.evaluate(f"localStorage.setItem('aigc.locale', '{locale}')")


def test_first_route_fits_the_bundle_budget():
    """``web/scripts/report-size.mjs`` fails above 350 KB gzip for what the first page loads."""
    measured = subprocess.run(["node", "scripts/report-size.mjs"], cwd=ROOT / "web", capture_output=True, text=True,
                              timeout=60)
    assert measured.returncode == 0, measured.stdout + measured.stderr


def png(color=(37, 99, 235), size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


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

    # Registration with live rule hints; a Chinese login name is pointed to the display name.
    page.goto("/register")
    page.locator("input[name=password]").fill("short")
    assert page.locator(".rules li.ok").count() == 1  # only "at least one letter"
    page.locator("input[name=username]").fill("小明创作")
    page.get_by_test_id("username-ascii-hint").wait_for()
    register(page, alice, display_name="小明创作")
    _display_name(page)
    sync_api.expect(page.get_by_test_id("greeting")).to_have_text(re.compile(r"^欢迎，小明创作"))
    shoot(page, "dashboard-first-run-desktop")

    bob_page = _phone_create(browser, bob)
    admin_page = _describe_model(browser, platform, admin)
    _recommended_and_presets(page)
    seed = _create_and_watch(page)
    _fault_is_explained(page, platform)
    _workflow_parameters(page)
    _history_reuse(page, seed)
    _gallery_lightbox(page, bob_page)
    _credits_by_job(page)
    _dark_mode(page)
    _profile(page)
    _fleet_running_fits(admin_page, platform)
    _admin(admin_page, page, bob_page, alice, bob)
    _developer(page, admin_page)
    _moderation_rows(page, bob_page, admin_page)
    _long_address_on_one_line(admin_page, platform)
    _every_page(browser, page, admin_page, alice)

    # Reload keeps the session and the live balance; a returning user is welcomed back.
    page.goto("/dashboard")
    sync_api.expect(page.get_by_test_id("greeting")).to_have_text(re.compile(r"^欢迎回来"))
    page.reload()
    wait_balance(page, 555)


def _display_name(page) -> None:
    """The display name given at registration is the profile's, the menu's and the page title's;
    changing it in the profile round-trips through the server. A new account's session is kept
    (like "remember me")."""
    assert page.evaluate("localStorage.getItem('aigc.session') !== null")
    assert api(page, "GET", "/api/users/profile")["user"]["displayName"] == "小明创作"
    page.goto("/profile")
    sync_api.expect(page.get_by_test_id("profile-name")).to_have_text("小明创作")
    page.get_by_test_id("profile-edit").click()
    fill(page, "profile-display-name", "  小明的画室 ")
    page.get_by_test_id("profile-save").click()
    sync_api.expect(page.get_by_test_id("profile-name")).to_have_text("小明的画室")
    assert api(page, "GET", "/api/users/profile")["user"]["displayName"] == "小明的画室"
    page.get_by_test_id("profile-edit").click()
    fill(page, "profile-display-name", "小明创作")
    page.get_by_test_id("profile-save").click()
    sync_api.expect(page.get_by_test_id("profile-name")).to_have_text("小明创作")
    page.reload()
    assert field_value(page, "profile-display-name") == "小明创作"
    sync_api.expect(page.get_by_test_id("user-menu")).to_contain_text("小明创作")
    page.goto("/dashboard")


def _phone_create(browser: Browser, bob: str):
    """On a phone, pressing 开始创作 brings the running job into view."""
    phone = browser.new_page(VIEWPORTS["phone"])
    register(phone, bob)
    phone.goto("/create")
    phone.get_by_test_id("model").wait_for()
    no_horizontal_overflow(phone, "create (phone)")
    submit_job(phone, "a phone-made kite", batch=1, steps=20)
    card = job_card(phone, "a phone-made kite")
    sync_api.expect(card).to_be_in_viewport()
    sync_api.expect(card.get_by_test_id("job-status")).to_be_in_viewport()
    phone.wait_for_selector("[data-status=succeeded]")
    no_horizontal_overflow(phone, "create with a result (phone)")
    shoot(phone, "create-progress-phone")
    return phone


def _describe_model(browser: Browser, platform: Platform, admin: str):
    """An administrator names a model in both languages, describes it, gives it a preview picture
    and recommended settings, in the admin console."""
    created = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "services.auth.app:create_app", "auth", "create-admin", admin,
         f"{admin}@example.com", "--password", PASSWORD],
        env=platform.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr[-1000:]
    admin_page = browser.new_page(VIEWPORTS["tablet"])
    login(admin_page, admin, PASSWORD)
    admin_page.goto("/admin")
    admin_page.get_by_role("tab", name="模型与预设").click()
    row = admin_page.get_by_test_id("admin-model-sdxl_demo.safetensors")
    row.get_by_test_id("edit-model-sdxl_demo.safetensors").click()
    fill(admin_page, "model-name-zh", "梦幻写实")
    fill(admin_page, "model-name-en", "Dream Real")
    fill(admin_page, "model-description-zh", "适合写实人像的演示模型")
    for name, value in (("steps", "24"), ("cfgScale", "5.5")):
        input_of(admin_page, f"model-recommended-{name}").fill(value)
        admin_page.keyboard.press("Tab")
    with admin_page.expect_response(lambda r: r.url.endswith("/api/uploads")) as uploaded:
        admin_page.get_by_test_id("model-preview-input").set_input_files(
            {"name": "preview.png", "mimeType": "image/png", "buffer": png((200, 60, 90), (640, 480))})
    assert uploaded.value.ok, uploaded.value.text()
    admin_page.get_by_test_id("save-model").click()
    sync_api.expect(row).to_contain_text("梦幻写实")
    sync_api.expect(row.locator("img")).to_have_attribute("src", re.compile(r"^/media/previews/"))
    shoot(admin_page, "admin-models-tablet")
    return admin_page


def _recommended_and_presets(page) -> None:
    """Picking the described model shows its name, picture and description and applies its
    recommended settings; the style presets come from the server."""
    page.goto("/create")
    page.get_by_test_id("model").click()
    option = page.locator(".el-select-dropdown__item:visible").filter(has_text="梦幻写实")
    sync_api.expect(option.locator("img")).to_have_attribute("src", re.compile(r"^/media/previews/"))
    option.click()
    page.get_by_text("已应用「梦幻写实」的推荐参数").wait_for()
    sync_api.expect(page.get_by_test_id("param-steps")).to_contain_text("· 24")
    sync_api.expect(page.get_by_test_id("param-cfgScale")).to_contain_text("· 5.5")
    sync_api.expect(page.get_by_test_id("model-description")).to_have_text("适合写实人像的演示模型")
    shoot(page, "create-recommended-desktop")
    page.get_by_test_id("model").click()
    page.locator(".el-select-dropdown__item:visible").filter(has_text="sd15_demo.safetensors").click()
    presets = page.request.get("/api/models").json()["data"]["stylePresets"]
    cinematic = next(preset for preset in presets if preset["key"] == "cinematic")
    fill(page, "prompt", "a quiet pier")
    page.get_by_test_id("style-cinematic").click()
    assert field_value(page, "prompt") == f"a quiet pier, {cinematic['text']}"


def _create_and_watch(page) -> int:
    page.goto("/create")
    page.get_by_test_id("model").wait_for()
    assert page.get_by_test_id("cost").inner_text() == "15"

    # Two square images with real progress.
    submit_job(page, "a red fox in the snow", batch=2, steps=30)
    card = job_card(page, "a red fox in the snow")
    card.get_by_test_id("job-steps").wait_for()
    assert re.search(r"步骤 \d+ / 30", card.get_by_test_id("job-steps").inner_text())
    sync_api.expect(card).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT_MS)
    assert card.get_by_test_id("result-image").count() == 2
    wait_balance(page, 470)

    # A third image, with the live preview, cancelled mid-run: the hold comes back.
    submit_job(page, "a slow lighthouse at dusk", batch=1, steps=60)
    slow = job_card(page, "a slow lighthouse at dusk")
    slow.get_by_test_id("job-progress").wait_for()
    slow.get_by_test_id("job-preview").wait_for()
    wait_balance(page, 455)
    slow.get_by_test_id("cancel-job").click()
    page.locator(".el-message-box").get_by_role("button", name="取消任务").click()
    slow.get_by_test_id("job-cancelled").wait_for()
    wait_balance(page, 470)
    assert "退还 15 积分" in slow.get_by_test_id("job-cancelled").inner_text()

    # A portrait image by Ctrl+Enter: shown whole at 2:3, with its seed.
    prepare_job(page, "a tall pagoda in mist", batch=1, steps=12, aspect="2:3")
    input_of(page, "prompt").focus()
    page.keyboard.press("Control+Enter")
    tall = job_card(page, "a tall pagoda in mist")
    sync_api.expect(tall).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT_MS)
    wait_balance(page, 455)
    assert_aspect(tall.get_by_test_id("result-img").first, 512 / 768)
    seed = int(re.search(r"(\d+)", tall.get_by_test_id("job-seed").inner_text()).group(1))
    shoot(page, "create-results-desktop")

    # The result lightbox: the whole picture, its parameters, save from there with the job's prompt as title.
    tall.get_by_test_id("result-open").first.click()
    viewer = page.locator(".viewer-dialog")
    sync_api.expect(viewer.get_by_test_id("viewer-param-seed")).to_contain_text(str(seed))
    assert_aspect(viewer.get_by_test_id("viewer-image"), 512 / 768)
    viewer.get_by_test_id("viewer-save").click()
    assert field_value(page, "save-title") == "a tall pagoda in mist"
    page.get_by_test_id("save-confirm").click()
    page.get_by_text("已保存 1 个作品").wait_for()
    page.keyboard.press("Escape")
    sync_api.expect(viewer).to_be_hidden()

    # Save the first square image as "Red fox"; result actions are visible without hovering.
    done = job_card(page, "a red fox in the snow")
    sync_api.expect(done.get_by_test_id("save-one").first).to_be_visible()
    done.get_by_test_id("save-one").first.click()
    fill(page, "save-title", "Red fox")
    page.get_by_test_id("save-confirm").click()
    page.get_by_text("已保存 1 个作品").first.wait_for()

    # The form survives a reload.
    fill(page, "prompt", "remember this prompt")
    page.reload()
    page.get_by_test_id("model").wait_for()
    assert field_value(page, "prompt") == "remember this prompt"
    return seed


def _fault_is_explained(page, platform: Platform) -> None:
    """A GPU out-of-memory failure is said in Chinese with the refund; no internal address shows."""
    response = page.request.post(f"{platform.env['COMFYUI_URL']}/emulator/config", data={
        "faults": {"execution_error": f"CUDA out of memory. Tried to allocate 2.00 GiB at {platform.env['COMFYUI_URL']} (node KSampler)"}})
    assert response.ok, response.text()
    submit_job(page, "a doomed dragon", batch=1, steps=8)
    failed = job_card(page, "a doomed dragon")
    sync_api.expect(failed).to_have_attribute("data-status", "failed", timeout=TIMEOUT_MS)
    error = failed.get_by_test_id("job-error")
    sync_api.expect(error).to_contain_text("显存不足")
    sync_api.expect(failed.get_by_test_id("job-refund")).to_have_text(re.compile("已退还 15 积分"))
    assert "127.0.0.1" not in error.inner_text() and "http" not in error.inner_text()
    wait_balance(page, 455)
    shoot(page, "create-error-desktop")
    page.goto("/notifications")
    page.get_by_text("生成任务失败：显存不足").first.wait_for()
    assert "127.0.0.1" not in page.locator(".shell-main").inner_text()


# Parameters laid out with their help (prompts, model, size and count are self-explaining).
HELPED_PARAMETERS = {"steps", "cfgScale", "seed", "sampler", "denoise", "guidance", "lora", "loraStrength", "scale",
                     "upscaleModel", "clipL", "t5", "vae"}


def _workflow_parameters(page) -> None:
    """Each workflow shows every parameter its template declares."""
    catalog = page.request.get("/api/models").json()["data"]
    page.goto("/create")
    page.get_by_test_id("model").wait_for()
    for workflow in catalog["workflows"]:
        page.get_by_test_id(f"workflow-{workflow['name']}").click()
        sync_api.expect(page.get_by_test_id(f"workflow-{workflow['name']}")).to_have_attribute("aria-checked", "true")
        for parameter in workflow["parameters"]:
            field = page.get_by_test_id(f"param-{parameter['name']}")
            sync_api.expect(field).to_have_count(1)
            if parameter["name"] in HELPED_PARAMETERS:  # the template's one-line help, in Chinese
                sync_api.expect(field).to_contain_text(parameter["help"]["zh"])
        no_horizontal_overflow(page, f"create {workflow['name']}")
        shoot(page, f"create-{workflow['name']}-desktop")
    page.get_by_test_id("workflow-text2img").click()


def _history_reuse(page, seed: int) -> None:
    """Reusing a job from the history refills the form exactly, seed included."""
    page.goto("/history")
    items = page.locator("article[data-testid^=history-]")
    fill(page, "history-search", "PAGODA mist")
    sync_api.expect(items).to_have_count(1)
    item = items.filter(has_text="a tall pagoda in mist").first
    sync_api.expect(item.get_by_test_id("history-seed")).to_contain_text(str(seed))
    sync_api.expect(item.get_by_test_id("history-expires")).to_contain_text("保留至")
    shoot(page, "history-desktop")
    item.get_by_test_id("history-reuse-all").click()
    page.wait_for_url("**/create**")
    sync_api.expect(input_of(page, "seed")).to_have_value(str(seed))
    assert field_value(page, "prompt") == "a tall pagoda in mist"
    sync_api.expect(page.get_by_test_id("aspect-2:3")).to_have_attribute("aria-checked", "true")
    sync_api.expect(page.get_by_test_id("param-steps")).to_contain_text("· 12")
    sync_api.expect(page.get_by_test_id("batch").locator(".is-active")).to_have_text("1")
    # "Vary" keeps the settings with a random seed.
    page.goto("/history")
    page.locator("article[data-testid^=history-]").filter(has_text="a tall pagoda in mist").first.get_by_test_id("history-vary").click()
    page.wait_for_url("**/create**")
    page.get_by_test_id("seed-random").wait_for()
    assert field_value(page, "prompt") == "a tall pagoda in mist"


def _gallery_lightbox(page, bob_page) -> None:
    page.goto("/gallery")
    cards = page.get_by_test_id("work-card")
    pagoda = cards.filter(has_text="a tall pagoda in mist").first
    pagoda.wait_for()
    assert_aspect(pagoda.get_by_test_id("work-image"), 512 / 768)
    assert_aspect(cards.filter(has_text="Red fox").first.get_by_test_id("work-image"), 1)
    sync_api.expect(pagoda).to_contain_text("小明创作")  # the author's display name, from auth's directory
    shoot(page, "gallery-desktop")

    # Cards take the focus; Enter opens the lightbox with the full reproduction data.
    pagoda.focus()
    page.keyboard.press("Enter")
    viewer = page.locator(".viewer-dialog")
    for name in ("model", "steps", "cfgScale", "seed", "sampler"):
        viewer.get_by_test_id(f"viewer-param-{name}").wait_for()
    sync_api.expect(viewer.get_by_test_id("viewer-param-steps")).to_have_text(re.compile(r"^\s*12\s*$"))
    sync_api.expect(viewer.get_by_test_id("viewer-param-model")).not_to_contain_text(".safetensors")
    viewer.get_by_test_id("copy-prompt").click()
    assert page.evaluate("navigator.clipboard.readText()") == "a tall pagoda in mist"
    first = viewer.get_by_test_id("viewer-index").inner_text()
    forward, back = ("ArrowRight", "ArrowLeft") if viewer.get_by_test_id("viewer-next").count() else ("ArrowLeft", "ArrowRight")
    page.keyboard.press(forward)
    sync_api.expect(viewer.get_by_test_id("viewer-index")).not_to_have_text(first)
    sync_api.expect(viewer.get_by_test_id("viewer-prompt")).not_to_have_text("a tall pagoda in mist")
    page.keyboard.press(back)
    sync_api.expect(viewer.get_by_test_id("viewer-index")).to_have_text(first)
    shoot(page, "gallery-lightbox-desktop")
    page.keyboard.press("Escape")
    sync_api.expect(viewer).to_be_hidden()

    # "/" jumps to the search box.
    page.keyboard.press("/")
    sync_api.expect(input_of(page, "gallery-search")).to_be_focused()

    # Bob likes "Red fox" with a heart from his phone.
    bob_page.goto("/gallery")
    work_card = bob_page.get_by_test_id("work-card").filter(has_text="Red fox").first
    work_card.get_by_test_id("like").click()
    sync_api.expect(work_card.get_by_test_id("like")).to_have_class(re.compile(r"\bliked\b"))
    no_horizontal_overflow(bob_page, "gallery (phone)")
    shoot(bob_page, "gallery-phone")

    # Alice's bell shows Bob's like (and the failed job).
    sync_api.expect(page.get_by_test_id("bell").locator("sup")).to_have_text("2")


def _credits_by_job(page) -> None:
    """One line per render job first (its images, net cost, prompt, thumbnail; a failed one
    refunded), the signup bonus beside them, then the chart and the price card; 去兑换 leads
    to the code box."""
    jobs = api(page, "GET", "/api/jobs?pageSize=100")["total"]
    page.goto("/profile?tab=credits")
    page.get_by_test_id("ledger").wait_for()
    rows = page.get_by_test_id("ledger-job-row")
    sync_api.expect(rows).to_have_count(jobs)
    fox = rows.filter(has_text="生成 2 张").first
    sync_api.expect(fox.get_by_test_id("ledger-amount")).to_have_text(re.compile(r"−\s*30"))
    sync_api.expect(fox).to_contain_text("a red fox in the snow")
    sync_api.expect(fox.locator("img")).to_be_visible()
    sync_api.expect(rows.filter(has_text="a doomed dragon")).to_contain_text("积分已全部退还")
    sync_api.expect(page.get_by_test_id("ledger-entry-row").filter(has_text="注册奖励")).to_have_count(1)
    sync_api.expect(page.get_by_test_id("price-card")).to_contain_text("15 积分/张")
    ledger_top = page.get_by_test_id("ledger").bounding_box()["y"]
    assert ledger_top < page.locator(".chart-col").bounding_box()["y"], "the jobs come before the chart"
    shoot(page, "profile-credits-desktop")
    page.goto("/profile?tab=credits&redeem=1")
    sync_api.expect(input_of(page, "redeem-input")).to_be_focused()


def _dark_mode(page) -> None:
    page.goto("/gallery")
    page.get_by_test_id("theme").click()
    page.get_by_test_id("theme-dark").click()
    sync_api.expect(page.locator("html")).to_have_class(re.compile(r"\bdark\b"))
    page.reload()
    sync_api.expect(page.locator("html")).to_have_class(re.compile(r"\bdark\b"))
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(v) for v in re.findall(r"\d+", background)[:3])
    assert red + green + blue < 150, background
    shoot(page, "gallery-dark-desktop")
    for path, name in (("/create", "create"), ("/history", "history"), ("/profile?tab=credits", "credits")):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        shoot(page, f"{name}-dark-desktop")
    page.goto("/gallery")
    page.get_by_test_id("theme").click()
    page.get_by_test_id("theme-light").click()
    sync_api.expect(page.locator("html")).not_to_have_class(re.compile(r"\bdark\b"))


def _profile(page) -> None:
    page.goto("/profile")
    page.get_by_test_id("profile-edit").click()
    fill(page, "profile-bio", "I paint foxes.")
    page.get_by_test_id("profile-save").click()
    page.get_by_text("已保存").first.wait_for()
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (37, 99, 235)).save(buffer, "PNG")
    with page.expect_response(lambda r: r.url.endswith("/api/users/avatar")) as avatar_response:
        page.get_by_test_id("avatar-input").set_input_files({"name": "me.png", "mimeType": "image/png", "buffer": buffer.getvalue()})
    assert avatar_response.value.ok, avatar_response.value.text()
    page.get_by_text("头像已更新").wait_for()
    page.get_by_role("tab", name="账户安全").click()
    # A wrong current password is shown on its field.
    fill(page, "pwd-current", "not-my-password-1")
    fill(page, "pwd-new", NEW_PASSWORD)
    fill(page, "pwd-confirm", NEW_PASSWORD)
    page.get_by_test_id("pwd-submit").click()
    page.locator(".el-form-item.is-error").filter(has_text="当前密码").get_by_text("密码不正确").wait_for()
    fill(page, "pwd-current", PASSWORD)
    with page.expect_response(lambda r: r.url.endswith("/api/users/password")) as password_response:
        page.get_by_test_id("pwd-submit").click()
    assert password_response.value.ok, password_response.value.text()
    page.get_by_text("密码已修改").wait_for()


def _admin(admin_page, page, bob_page, alice: str, bob: str) -> None:
    """The admin console: a grant shows live on Alice's page and in the users table (balances
    from the server), jobs are listed with their owner's name, an admin cancel refunds Bob, a
    hidden work is listed with its reason and restored, and a code shows who redeemed it."""
    admin_page.goto("/admin")
    fill(admin_page, "admin-search", "小明创作")
    sync_api.expect(admin_page.get_by_test_id(f"balance-{alice}")).to_have_text("455")
    admin_page.get_by_test_id(f"grant-{alice}").click()
    fill(admin_page, "adjust-amount", "100")
    fill(admin_page, "adjust-reason", "browser test")
    admin_page.get_by_test_id("adjust-submit").click()
    wait_balance(page, 555)
    admin_page.locator(".el-dialog").filter(has=admin_page.get_by_test_id("adjust-submit")).wait_for(state="hidden")
    sync_api.expect(admin_page.get_by_test_id(f"balance-{alice}")).to_have_text("555")
    # At tablet width every column fits side by side: the role is not hidden under the actions.
    row = admin_page.get_by_test_id("admin-users").locator("tr").filter(has=admin_page.get_by_test_id(f"balance-{alice}"))
    role, grant = row.locator(".el-select").bounding_box(), admin_page.get_by_test_id(f"grant-{alice}").bounding_box()
    more, table = admin_page.get_by_test_id(f"more-{alice}").bounding_box(), admin_page.get_by_test_id("admin-users").bounding_box()
    assert role["x"] + role["width"] <= grant["x"] and more["x"] + more["width"] <= table["x"] + table["width"], (role, grant, more, table)
    assert row.locator(".el-select__placeholder").evaluate("el => el.scrollWidth <= el.clientWidth"), "the role is cut short"
    shoot(admin_page, "admin-tablet")

    # Jobs: the failed one with its cause in words and its owner's display name.
    admin_page.get_by_role("tab", name="任务").click()
    failed = admin_page.get_by_test_id("admin-jobs").locator("tr").filter(has_text="显存不足").first
    sync_api.expect(failed).to_contain_text("小明创作")
    shoot(admin_page, "admin-jobs-tablet")
    # An admin cancels Bob's long job; Bob gets the hold back.
    before = api(bob_page, "GET", "/api/users/credits")["available"]
    job_id = api(bob_page, "POST", "/api/generate", {"prompt": "a kite cut loose", "steps": 100})["job"]["id"]
    admin_page.get_by_test_id("admin-job-status").get_by_text("全部").click()
    kite = admin_page.get_by_test_id("admin-jobs").locator("tr").filter(has_text="a kite cut loose").first
    kite.get_by_role("button", name="取消任务").click()
    admin_page.locator(".el-message-box").get_by_role("button", name="取消任务").click()
    wait_until(lambda: api(bob_page, "GET", f"/api/jobs/{job_id}")["status"] == "cancelled", "the admin cancel")
    wait_until(lambda: api(bob_page, "GET", "/api/users/credits") == {"available": before, "held": 0},
               "Bob's refund")

    # Moderation: hide a work, find it in the hidden list with the reason, restore it.
    admin_page.get_by_role("tab", name="内容审核").click()
    fill(admin_page, "admin-works-search", "Red fox")
    card = admin_page.get_by_test_id("admin-works").locator(".mod-item").filter(has_text="Red fox").first
    card.get_by_role("button", name="隐藏").click()
    box = admin_page.locator(".el-message-box")
    box.locator("input").fill("重复内容")
    box.get_by_role("button", name="隐藏").click()
    admin_page.get_by_test_id("admin-works-status").get_by_text("已隐藏").click()
    hidden = admin_page.get_by_test_id("admin-works").locator(".mod-item").filter(has_text="Red fox").first
    sync_api.expect(hidden).to_contain_text("已隐藏：重复内容")
    shoot(admin_page, "admin-hidden-works-tablet")
    hidden.get_by_test_id("restore-work").click()
    sync_api.expect(admin_page.get_by_test_id("admin-works").locator(".mod-item").filter(has_text="Red fox")).to_have_count(0)

    # Redeem codes: who redeemed one.
    code = api(admin_page, "POST", "/api/admin/credits/redeem-codes", {"amount": 5, "maxUses": 3})["code"]
    api(bob_page, "POST", "/api/users/credits/redeem", {"code": code})
    admin_page.get_by_role("tab", name="兑换码").click()
    admin_page.get_by_test_id(f"redemptions-{code}").click()
    sync_api.expect(admin_page.get_by_test_id("redemptions")).to_contain_text(bob)
    shoot(admin_page, "admin-redemptions-tablet")
    admin_page.keyboard.press("Escape")


def _fleet_running_fits(admin_page, platform: Platform) -> None:
    """The fleet lists a job while it runs, its table inside the card at tablet and phone width. The table is only
    filled while a job runs: the admin's job hangs in ComfyUI (the emulator's one-shot fault) until cancelled."""
    response = admin_page.request.post(f"{platform.env['COMFYUI_URL']}/emulator/config", data={"faults": {"hang": True}})
    assert response.ok, response.text()
    prompt = "a lighthouse in a storm, waves breaking over the rocks"
    job_id = api(admin_page, "POST", "/api/generate", {"prompt": prompt})["job"]["id"]
    try:
        wait_until(lambda: api(admin_page, "GET", f"/api/jobs/{job_id}")["status"] == "running", "the lighthouse to start")
        admin_page.get_by_test_id("admin-tab-fleet").click()
        table = admin_page.get_by_test_id("fleet-running")
        for label in ("tablet", "phone"):
            admin_page.set_viewport_size({"width": VIEWPORTS[label][0], "height": VIEWPORTS[label][1]})
            table.locator("tr").filter(has_text=prompt).wait_for()
            body, card = table.evaluate("t => [t.querySelector('.el-table__body').offsetWidth, t.clientWidth]")
            assert body <= card, f"the running jobs at {label} width: {body} px in {card}"
            table.scroll_into_view_if_needed()
            admin_page.wait_for_timeout(300)  # painted whole after the resize and the scroll, not half of it
            shoot(admin_page, f"admin-fleet-running-{label}")
    finally:
        api(admin_page, "DELETE", f"/api/jobs/{job_id}")
        admin_page.set_viewport_size({"width": VIEWPORTS["tablet"][0], "height": VIEWPORTS["tablet"][1]})
    wait_until(lambda: api(admin_page, "GET", f"/api/jobs/{job_id}")["status"] == "cancelled", "the lighthouse's cancel")


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.25)


def _developer(page, admin_page) -> None:
    """Alice makes an API token (shown once, then listed by its prefix) and is refused a loopback
    webhook; the admin creates a service account and sees its credentials once."""
    page.goto("/developer")
    fill(page, "token-name", "browser script")
    page.get_by_test_id("create-token").click()
    token = page.get_by_test_id("new-token")
    sync_api.expect(token).to_have_text(re.compile(r"^pat_"))
    page.get_by_test_id("api-tokens").get_by_text(token.inner_text()[:12] + "…").wait_for()
    fill(page, "hook-url", "http://127.0.0.1:9/hook")
    page.get_by_test_id("add-hook").click()
    sync_api.expect(page.get_by_test_id("hook-error")).to_contain_text("Webhook")
    shoot(page, "developer-desktop")
    admin_page.goto("/admin")
    admin_page.get_by_role("tab", name="服务账号").click()
    admin_page.get_by_test_id("sa-new").click()
    fill(admin_page, "sa-name", f"svc_{uuid.uuid4().hex[:8]}")
    admin_page.get_by_test_id("sa-create").click()
    sync_api.expect(admin_page.get_by_test_id("credentials")).to_contain_text("qsec_")
    shoot(admin_page, "admin-service-account-credentials-tablet")
    admin_page.keyboard.press("Escape")


def _ledger_fits(page, label: str, language: str) -> None:
    """The credits ledger, by job and entry by entry, never scrolls sideways inside itself; on a
    phone the page does not either and each entry still shows the balance after it."""
    ledger = page.locator("[data-testid=ledger], [data-testid=ledger-table]")
    no_inner_overflow(ledger, f"the ledger by job ({label}, {language})")
    page.get_by_test_id("ledger-entries").click()
    sync_api.expect(page.get_by_test_id("ledger-entries")).to_have_class(re.compile(r"\bis-active\b"))
    ledger.locator(".el-table__row, [data-testid=ledger-entry-row]").first.wait_for()
    no_inner_overflow(ledger, f"the ledger's entries ({label}, {language})")
    if label == "phone":
        no_horizontal_overflow(page, f"credits entries ({language})")
        sync_api.expect(ledger.get_by_test_id("ledger-after").first).to_be_visible()  # the balance, as in the table
        # A charge leaves the available balance as it was (its hold took the credits): it says it paid from the reserve.
        charged = ledger.get_by_test_id("ledger-entry-row").filter(has_text="Charged" if language == "en" else "扣费")
        sync_api.expect(charged.first.get_by_test_id("ledger-held")).to_have_text(
            re.compile(r"Paid \d+ from the reserve" if language == "en" else r"从预留中支付 \d+"))
        page.get_by_test_id("ledger-entries").evaluate("el => el.scrollIntoView({ block: 'start' })")  # the entries in the picture
    shoot(page, f"credits-entries-{label}-{language}")


def _my_works_table_fits(page, label: str, language: str) -> None:
    """My works switched to its table view never scrolls sideways inside itself and cuts no cell short: on a
    phone every work is an entry of a list (its thumbnail at its own aspect ratio, name, public switch, actions and a
    box that selects it for the bulk actions); from a tablet up the columns fit, also beside a classic 15 px desktop
    scroll bar (a 15 px gutter at the page's right, as a scroll bar takes it). The grid comes back after."""
    works = api(page, "GET", "/api/works/my?pageSize=24")["items"]
    if label == "phone":  # the grid's narrow cards say their date and title whole (shorter, over lines)
        dates = page.locator(".work-card .date")
        sync_api.expect(dates).to_have_count(len(works))
        cut = dates.evaluate_all("ds => ds.filter((d) => d.offsetWidth && d.scrollWidth > d.clientWidth).map((d) => d.textContent)")
        assert not cut, f"my works' grid cuts dates short ({language}): {cut}"
        cut = page.locator(".work-card .work-title").evaluate_all(
            "ts => ts.filter((t) => t.scrollWidth > t.clientWidth || t.scrollHeight > t.clientHeight + 1).map((t) => t.textContent)")
        assert not cut, f"my works' grid cuts titles short ({language}): {cut}"
        uneven = page.locator(".work-card").evaluate_all("""cards => {
            const rows = {}  // the meta line's bottom of each card, by the row the card starts in
            for (const card of cards) {
              (rows[Math.round(card.getBoundingClientRect().top)] ||= []).push(
                Math.round(card.querySelector('.work-meta').getBoundingClientRect().bottom))
            }
            return Object.values(rows).filter((bottoms) => new Set(bottoms).size > 1) }""")
        assert not uneven, f"my works' grid: the meta lines of a row's cards do not align ({language}): {uneven}"
        under = page.locator(".work-card").evaluate_all("""cards => cards.flatMap((card) => {
            const check = card.querySelector('.work-check').getBoundingClientRect()
            return [...card.querySelectorAll('.work-badges .el-tag')].filter((tag) => {
              const r = tag.getBoundingClientRect()
              return r.left < check.right && r.right > check.left && r.top < check.bottom && r.bottom > check.top
            }).map((tag) => tag.textContent.trim()) })""")
        assert not under, f"my works' grid hides badges under the select boxes ({language}): {under}"
    table = page.get_by_test_id("my-works-table")
    switch = page.get_by_test_id("my-works-view-table")
    if label != "phone":
        page.evaluate("document.documentElement.style.paddingRight = '15px'")  # the table is laid out at that width
        switch.click()
        table.locator(".el-table__row, [data-testid=my-work-row]").first.wait_for()
        no_inner_overflow(table, f"my works' table beside a scroll bar ({label}, {language})")
        page.get_by_test_id("my-works-view-grid").click()
        table.wait_for(state="detached")
        page.evaluate("document.documentElement.style.paddingRight = ''")
    switch.click()
    sync_api.expect(switch).to_have_class(re.compile(r"\bis-active\b"))
    rows = table.locator(".el-table__row, [data-testid=my-work-row]")
    sync_api.expect(rows).to_have_count(len(works))
    no_inner_overflow(table, f"my works' table ({label}, {language})")
    cut = table.evaluate("""el => [...el.querySelectorAll('.cell')].filter((c) => c.scrollWidth > c.clientWidth)
        .map((c) => `${c.textContent.trim() || c.innerHTML.slice(0, 60)}: ${c.scrollWidth} px in ${c.clientWidth}`)""")
    assert not cut, f"my works' table cuts cells short ({label}, {language}): {cut}"
    split = table.evaluate("""el => [...el.querySelectorAll('th .cell')].filter((c) => {
        const range = document.createRange(); range.selectNodeContents(c)
        return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size > 1 }).map((c) => c.textContent.trim())""")
    assert not split, f"my works' table breaks headings over lines ({label}, {language}): {split}"
    for index, work in enumerate(works):  # each thumbnail keeps its picture's shape
        ratio = min(4, max(0.25, work["width"] / work["height"])) if work.get("width") and work.get("height") else 1
        assert_aspect(rows.nth(index).locator("img").first, ratio)
    if label == "phone":
        no_horizontal_overflow(page, f"my works' table view ({language})")
        first = rows.first
        for part in ("my-work-view", "my-work-edit", "my-work-delete", "my-work-public", "my-work-select"):
            box = first.get_by_test_id(part).bounding_box()  # every control of a row whole on the screen's width
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"], (part, box, language)
        select = first.get_by_test_id("my-work-select")  # a box a thumb can hit: 24 px at least (WCAG 2.5.8), drawn large
        target, drawn = select.bounding_box(), select.locator(".el-checkbox__inner").bounding_box()
        assert target["width"] >= 24 and target["height"] >= 24 and drawn["width"] >= 19, (target, drawn, language)
        select.click()  # selected for the bulk actions above the list
        sync_api.expect(page.locator(".batch-bar")).to_contain_text("已选 1 个" if language == "zh-CN" else "1 selected")
        sync_api.expect(page.locator(".batch-bar").get_by_role("button", name="设为公开" if language == "zh-CN"
                                                                else "Make public")).to_be_visible()
        select.click()
        sync_api.expect(page.locator(".batch-bar")).to_contain_text("全选本页" if language == "zh-CN" else "Select page")
        page_box = page.get_by_test_id("my-works-select-page").locator(".el-checkbox__inner").bounding_box()
        assert page_box["width"] >= 19, ("the page's select box", page_box, language)
    page.locator(".batch-bar").evaluate("el => el.scrollIntoView({ block: 'start' })")  # the works in the picture
    shoot(page, f"my-works-table-{label}-{language}")
    page.get_by_test_id("my-works-view-grid").click()
    sync_api.expect(page.get_by_test_id("my-works-view-grid")).to_have_class(re.compile(r"\bis-active\b"))


def _moderation_rows(page, bob_page, admin_page) -> None:
    """Rows for the console's moderation tables, so every size below lays them out with content: a term to
    review (the terms and the audit log), Alice's oldest work flagged by it (the review queue), and Bob's
    report of her newest one (the reports)."""
    term = f"加微信{uuid.uuid4().hex[:6]}"
    api(admin_page, "POST", "/api/admin/safety/terms",
        {"text": term, "category": "ads", "severity": "review", "note": "browser test: contact details"})
    works = api(page, "GET", "/api/works/my?pageSize=24")["items"]
    api(page, "PUT", f"/api/works/{works[-1]['id']}", {"description": f"想要原图请{term}，价格私聊"})
    api(bob_page, "POST", f"/api/works/{works[0]['id']}/report", {"reason": "疑似盗用他人作品，请管理员核实"})
    # The queue searched for the term: the test database is shared, and the queue lists the oldest first.
    queue = api(admin_page, "GET", f"/api/admin/works/review?state=pending&search={quote(term)}")["items"]
    assert [item["id"] for item in queue] == [works[-1]["id"]], queue
    admin_page.goto("/admin")
    admin_page.get_by_test_id("admin-tab-works").click()  # the moderator sees the picture reported, at its shape
    assert_aspect(admin_page.get_by_test_id("admin-reports").locator("img").first, works[0]["width"] / works[0]["height"])


def _long_address_on_one_line(admin_page, platform) -> None:
    """On a desktop the users table shows an address longer than its column on one line, cut with an ellipsis
    and whole in a tooltip (it used to break mid-word over several lines)."""
    name = f"mail{uuid.uuid4().hex[:8]}"
    address = f"someone.with.a.rather.long.address.{name}@example.com"
    created = requests.post(platform.url("/api/users/register"),
                            json={"username": name, "email": address, "password": PASSWORD}, timeout=30)
    assert created.status_code == 201, created.text
    admin_page.set_viewport_size({"width": VIEWPORTS["desktop"][0], "height": VIEWPORTS["desktop"][1]})
    admin_page.goto("/admin")
    fill(admin_page, "admin-search", name)
    cell = admin_page.get_by_test_id("admin-users").locator("td .cell").filter(has_text=address)
    cell.wait_for()
    line = cell.evaluate("el => parseFloat(getComputedStyle(el).lineHeight)")
    height, cut = cell.evaluate("el => [el.getBoundingClientRect().height, el.scrollWidth > el.clientWidth]")
    assert height < 1.5 * line and cut, f"{address}: {height} px high (a line is {line}), cut: {cut}"
    cell.hover()
    admin_page.locator(".el-popper").filter(has_text=address).wait_for()


def _every_page(browser: Browser, page, admin_page, alice: str) -> None:
    """Every page at every size in both languages: no horizontal overflow on a phone, and a picture of each."""
    work_id = api(page, "GET", "/api/works/my?pageSize=1")["items"][0]["id"]
    pages = (("/dashboard", "dashboard"), ("/create", "create"), ("/history", "history"), ("/gallery", "gallery"),
             ("/my-works", "my-works"), ("/profile", "profile"), ("/profile?tab=credits", "credits"),
             ("/notifications", "notifications"), (f"/works/{work_id}", "work"), (f"/u/{alice}", "user"),
             ("/developer", "developer"))
    anonymous = browser.new_page()
    anonymous.goto("/login")
    sideways = []  # the admin console's tables wider than their card
    for language in ("zh-CN", "en"):
        for target in (page, admin_page, anonymous):
            set_language(target, language)
        for label, (width, height) in VIEWPORTS.items():
            for target, paths in ((page, pages), (admin_page, (("/admin", "admin"),)),
                                  (anonymous, (("/login", "login"), ("/register", "register")))):
                target.set_viewport_size({"width": width, "height": height})
                for path, name in paths:
                    target.goto(path)
                    target.wait_for_load_state("networkidle")
                    if label == "phone":
                        no_horizontal_overflow(target, f"{name} ({language})")
                    shoot(target, f"{name}-{label}-{language}")
                    if name == "credits":
                        _ledger_fits(target, label, language)
                    if name == "my-works":
                        _my_works_table_fits(target, label, language)
            if label in ("phone", "tablet"):
                for tab in ("users", "works", "review", "safety", "audit", "jobs", "models", "codes", "services",
                            "fleet", "sso"):  # every tab; the tabs wrap instead of scrolling
                    admin_page.goto("/admin")
                    admin_page.get_by_test_id(f"admin-tab-{tab}").click()
                    admin_page.wait_for_load_state("networkidle")
                    shares = admin_page.get_by_role("heading", name="各用户排队任务" if language == "zh-CN"
                                                    else "Waiting jobs by user")
                    if tab == "fleet":
                        shares.wait_for()  # the fleet loaded, not its skeleton
                    no_horizontal_overflow(admin_page, f"admin {tab} ({label}, {language})")
                    # No table of the console scrolls sideways: no button, status or prompt cut at the card's edge.
                    sideways += [f"{tab} ({label}, {language}): {table}" for table in admin_page.locator(".el-table").evaluate_all(
                        """tables => tables.filter((t) => t.querySelector('.el-table__body').offsetWidth > t.clientWidth)
                        .map((t) => `${t.querySelector('.el-table__body').offsetWidth} px in ${t.clientWidth}`)""")]
                    shoot(admin_page, f"admin-{tab}-{label}-{language}")
                    if tab == "fleet":  # the fair-share section, further down
                        shares.scroll_into_view_if_needed()
                        shoot(admin_page, f"admin-fleet-shares-{label}-{language}")
                page.goto("/dashboard")
                page.get_by_role("button", name="菜单" if language == "zh-CN" else "Menu").click()
                page.locator(".nav-drawer").get_by_text("我的作品" if language == "zh-CN" else "My works").wait_for()
                page.wait_for_timeout(500)  # let the drawer finish sliding in before the picture
                shoot(page, f"drawer-phone-{language}")
    assert not sideways, f"admin tables scroll sideways: {sideways}"
    likes = api(page, "GET", f"/api/works/{work_id}")["work"]["likes"]
    page.goto(f"/works/{work_id}")  # English counts take the singular for one
    page.locator(".stats").get_by_text(f"{likes} like" if likes == 1 else f"{likes} likes", exact=True).wait_for()
    page.goto("/gallery")
    page.get_by_role("heading", name="Gallery").wait_for()
    for target in (page, admin_page, anonymous):
        set_language(target, "zh-CN")
    page.set_viewport_size({"width": VIEWPORTS["desktop"][0], "height": VIEWPORTS["desktop"][1]})
