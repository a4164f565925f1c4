"""The playground page in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
Playwright types a prompt, presses Send, and the streamed text and a tokens/s figure appear.
Skips with a message where chromium or the playwright package is missing (scripts/setup_browser.sh
installs both)."""

from __future__ import annotations

import shutil

import pytest

from test_serve import make_run, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (scripts/setup_browser.sh)")
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium not installed (apt-get install chromium; see scripts/setup_browser.sh)")
    profile = tmp_path_factory.mktemp("chromium_profile")
    srv = serve(make_run(tmp_path_factory.mktemp("browser_run")), api_key=None)
    srv.wait_ready()
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = ctx.new_page()
            page.goto(srv.url + "/")
            yield page
        finally:
            ctx.close()
            srv.close()


def test_playground_streams_a_completion(browser_page):
    page = browser_page
    page.wait_for_function("document.getElementById('model').textContent === 'tiny'", timeout=10_000)
    page.fill("#temperature", "0")
    page.fill("#max_tokens", "24")
    page.fill("#prompt", "def main():")
    page.click("#send")
    page.wait_for_function("document.getElementById('stats').textContent.includes('tokens/s')", timeout=20_000)
    page.wait_for_function("!document.getElementById('send').disabled", timeout=20_000)
    out = page.text_content("#output")
    assert out.startswith("def main():") and len(out) > len("def main():")
    assert "24 tokens" in page.text_content("#stats")
    assert page.text_content("#error") == ""


def test_playground_chat_keeps_the_turns(browser_page):
    page = browser_page
    page.check("input[value=chat]")
    page.fill("#prompt", "Hello there")
    page.click("#send")
    page.wait_for_function("document.querySelectorAll('#history .turn').length === 2", timeout=20_000)
    turns = page.locator("#history .turn").all_text_contents()
    assert turns[0] == "user: Hello there" and turns[1].startswith("assistant:")
