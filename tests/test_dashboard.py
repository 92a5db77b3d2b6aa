"""The dashboard in a real headless browser (Debian's chromium, driven by
Playwright): every view, every action with its confirmation and result, a
viewer who is offered no actions, a phone-width viewport, and axe-core's
accessibility rules. Each view's screenshot is written to build/screenshots/
(or $HOTPLATE_SCREENSHOTS) for a person to look at."""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect, sync_playwright

from .conftest import ROOT
from .test_controller import first_deploy, hello
from .test_tokens import make

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("HOTPLATE_SCREENSHOTS", ROOT / "build" / "screenshots"))
VIEWS = ("#/", "#/deploys", "#/deploys/1", "#/diff", "#/modules", "#/fleet")


@pytest.fixture
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


def sign_in(page, token: str, who: str) -> None:
    page.fill("#token", token)
    page.click("#signin button")
    expect(page.locator("#auth")).to_have_text(f"signed in as {who}")


def test_an_operator_sees_a_push_arrive_rolls_back_with_confirmation_and_resumes(up, tmp_path, browser):
    server, work = first_deploy(up, tmp_path, "--bake", "3")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server.api + "/")
    expect(page.locator("#state")).to_have_text("✓ Synced")
    expect(page.locator("#health")).to_have_text("♥ Healthy")
    expect(page.locator("#auth")).to_contain_text("read-only")
    expect(page.locator("#recent tbody tr")).to_have_count(0)  # history needs a token
    expect(page.locator("#sync")).to_be_hidden()

    sign_in(page, server.token(), "admin (admin)")
    expect(page.locator("#recent tbody tr")).to_have_count(1)
    work.commit("v2: a friendlier greeting", {"hello.c": hello("v2")})
    with ThreadPoolExecutor(1) as pool:
        pushed = pool.submit(work.push)
        # while it bakes: its log opens and follows, and live is marked on trial
        expect(page.locator("#running-log")).to_contain_text("baking for 3s", timeout=15_000)
        expect(page.locator("#trial")).to_contain_text("on trial")
        expect(page.locator("#state")).to_have_text("↻ Progressing")
        shot(page, "deploying")
        assert "deploy succeeded" in pushed.result(timeout=60)
    expect(page.locator("#running")).to_be_hidden()
    newest = page.locator("#recent tbody tr").first
    expect(page.locator("#recent tbody tr")).to_have_count(2)  # without a reload
    expect(newest).to_contain_text("✓ succeeded")
    expect(newest).to_contain_text("v2: a friendlier greeting")
    expect(newest).to_contain_text("s ago")
    expect(newest.locator(".stages span").first).to_be_attached()
    v2 = server.status()["live"]["release"]
    expect(page.locator("#live")).to_contain_text(v2)
    expect(page.locator("#trial")).to_have_text("✓ verified")
    shot(page, "overview")

    page.click("a[href='#/deploys']")
    expect(page.locator("#deploys tbody tr")).to_have_count(2)
    shot(page, "deploys")
    page.locator("#deploys tbody tr").first.click()
    expect(page.locator("#log")).to_contain_text("deploy succeeded")
    expect(page.locator("#modules")).to_contain_text("hello (hello.c): ✓ compiled")
    expect(page.locator("#deploy-stages .legend")).to_contain_text("build")
    shot(page, "deploy")

    page.click("a[href='#/']")
    back = page.locator("#releases button").first
    back.click()  # roll back to the other release: first, a confirmation
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("stays pinned there until you resume")
    shot(page, "confirm-rollback")
    page.click("#confirm-cancel")
    expect(page.locator("#confirm")).to_be_hidden()
    assert not server.status()["pinned"], "cancelled: nothing moved"
    back.click()
    page.click("#confirm-ok")
    expect(page.locator("#said")).to_contain_text("rollback: succeeded")
    expect(page.locator("#state")).to_have_text("‖ Pinned")
    expect(page.locator("#pinned")).to_contain_text("pinned to")
    assert server.status()["pinned"] and server.status()["live"]["release"] != v2
    expect(page.locator("#releases tbody")).to_contain_text("live (pinned)")
    expect(page.locator("#recent tbody tr").first).to_contain_text("admin")  # who rolled back
    shot(page, "pinned")

    page.click("#resume")
    expect(page.locator("#said")).to_contain_text("resume: done")
    expect(page.locator("#state")).to_have_text("✓ Synced", timeout=15_000)  # (the tip deployed again: a 3 s bake)


def test_a_failed_build_shows_gccs_error_and_a_failed_release_asks_for_a_warning(up, tmp_path, browser):
    server, work = first_deploy(up, tmp_path)
    work.commit("unhealthy", {"hello.c": hello("v2", health=500)})
    assert "ROLLED BACK" in work.push()
    work.commit("broken", {"hello.c": "#include <hotplate.h>\nHP_MODULE;\nint hello(void) { return nope; }\n"})
    assert "deploy FAILED" in work.push()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server.api + "/")
    sign_in(page, server.token(), "admin (admin)")
    expect(page.locator("#failure")).to_be_visible()
    expect(page.locator("#state")).to_have_text("✗ Failed")
    expect(page.locator("#recent tbody tr").first).to_contain_text("✗ failed")
    expect(page.locator("#releases tbody")).to_contain_text("✗ failed its gate")
    risky = page.locator("#releases button", has_text="Roll back anyway…")
    expect(risky).to_have_count(1)
    risky.click()
    expect(page.locator("#confirm-title")).to_have_text("Roll back to a release that failed?")
    expect(page.locator("#confirm-text")).to_contain_text("never passed its health gate")
    page.click("#confirm-cancel")
    shot(page, "failed")

    page.locator("#recent tbody tr").first.click()
    expect(page.locator("#modules")).to_contain_text("FAILED")
    expect(page.locator("#modules pre.diagnostics")).to_contain_text("hello.c:3")
    shot(page, "deploy-failed-build")

    viewer = make(server, "vera", "viewer")
    page.click("#signout")
    sign_in(page, viewer, "vera (viewer)")
    page.click("a[href='#/']")
    expect(page.locator("#releases tbody tr").first).to_be_attached()
    expect(page.locator("#releases button")).to_have_count(0)  # nothing offered to a viewer
    expect(page.locator("#sync")).to_be_hidden()
    refused = page.evaluate("""async () => {
        const me = await (await fetch('/api/session')).json();
        const r = await fetch('/api/rollback', {method: 'POST', headers: {'X-CSRF-Token': me.csrf,
            'Content-Type': 'application/json'}, body: '{}'});
        return [r.status, (await r.json()).error];
    }""")
    assert refused[0] == 403 and "'vera' is a viewer" in refused[1], refused


@pytest.mark.parametrize("width", [1280, 420])
def test_every_view_fits_and_passes_axe(up, tmp_path, browser, width):
    """At desktop and at phone width: no sideways scrolling of the page, and
    no serious or critical axe-core violation, in every view."""
    server, work = first_deploy(up, tmp_path)
    for _ in range(3):
        requests.get(server.url + "/", timeout=5)
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors = []  # a script that threw, or something the page's CSP refused (not the API's own 401s)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and
            not m.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.api + "/")
    sign_in(page, server.token(), "admin (admin)")
    axe = Axe()
    for view in VIEWS:
        page.goto(server.api + "/" + view)
        expect(page.locator("#auth")).to_contain_text("signed in")
        expect(page.locator("[data-view]:visible")).to_have_count(1)
        if view == "#/modules":
            expect(page.locator("#module-list")).to_contain_text("/health")
            expect(page.locator("#module-list .chart canvas").first).to_be_attached(timeout=15_000)  # uPlot drew the rate
        if view == "#/fleet":
            expect(page.locator("#fleet-summary")).to_contain_text("not in a fleet")
        if view == "#/diff":
            expect(page.locator("#diff-summary")).to_contain_text("nothing to deploy")
        if view == "#/deploys/1":
            expect(page.locator("#log")).to_contain_text("deploy succeeded")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, f"{view} scrolls sideways at {width} px"
        found = axe.run(page).response["violations"]
        bad = [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
               for v in found if v["impact"] in ("serious", "critical")]
        assert not bad, f"{view} at {width} px: {bad}"
        name = view.strip("#/").replace("/", "-") or "overview"
        shot(page, f"{width}-{name}")
    assert not errors, errors
