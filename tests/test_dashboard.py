"""The dashboard in a real headless browser (Debian's chromium, driven by
Playwright): load it, see a push appear, click rollback, see the pin."""
import pytest
from playwright.sync_api import expect, sync_playwright

from .test_controller import first_deploy, hello

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def page():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser.new_page()
        browser.close()


def test_the_dashboard_shows_deploys_live_and_rolls_back(up, tmp_path, page):
    server, work = first_deploy(up, tmp_path)
    page.goto(server.api + "/")
    expect(page.locator("#state")).to_have_text("Synced")
    expect(page.locator("#auth")).to_contain_text("read-only")
    expect(page.locator("#deploys tbody tr")).to_have_count(0)  # history needs the token

    page.fill("#token", server.token())
    page.click("#signin button")
    expect(page.locator("#auth")).to_have_text("signed in as admin (admin)")
    expect(page.locator("#deploys tbody tr")).to_have_count(1)

    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    expect(page.locator("#deploys tbody tr")).to_have_count(2)  # the push appears without a reload
    v2 = server.status()["live"]["release"]
    expect(page.locator("#live")).to_contain_text(v2)

    page.locator("#deploys tbody tr").first.click()
    expect(page.locator("#log")).to_contain_text("deploy succeeded")
    expect(page.locator("#modules")).to_contain_text("hello (hello.c): compiled")

    page.locator("#releases button").first.click()  # roll back to the other release
    expect(page.locator("#pinned")).to_contain_text("pinned to")
    expect(page.locator("#state")).to_have_text("Pinned")
    assert server.status()["pinned"] and server.status()["live"]["release"] != v2
    expect(page.locator("#releases tbody")).to_contain_text("LIVE (pinned)")

    page.click("#resume")
    expect(page.locator("#said")).to_contain_text("resume: done")
    expect(page.locator("#state")).to_have_text("Synced")
