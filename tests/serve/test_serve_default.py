"""``mico-chat serve`` with the real default model, as ``make demo`` runs it: the OpenAI API beside
the web UI, and the UI driven in headless Chromium (Debian's ``chromium``, no downloaded browser)."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import openai
import pytest
from helpers.serve_api import data_url
from test_serve_cli import start_command, stop_with_ctrl_c

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DOCS = Path(__file__).resolve().parents[2] / "docs"
QUESTION = "What do you see and hear in this clip?"
REPLY_TOKENS = 40

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_server():
    """``mico-chat serve`` (default model) on a free port; stopped with Ctrl-C, which must exit cleanly."""
    process, url = start_command(["serve", "--port", "0", "--max-new-tokens", str(REPLY_TOKENS)], timeout_s=300)
    yield url
    assert stop_with_ctrl_c(process) == 0, "Ctrl-C stops the server cleanly"


def test_default_model_answers_over_the_api(default_server):
    client = openai.OpenAI(base_url=f"{default_server}/v1", api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat.completions.create(model="default", messages=messages, max_tokens=24)
    assert "Paris" in whole.choices[0].message.content
    stream = client.chat.completions.create(model="default", messages=messages, max_tokens=24, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == whole.choices[0].message.content


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


@pytest.mark.browser
def test_browser_chat_about_an_uploaded_clip(default_server, serve_media, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium; .ci/run installs it in CI)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(default_server)
            video_input = page.locator("#video-input input[type=file]")
            video_input.wait_for(state="attached", timeout=60_000)

            # A bad upload says what is wrong and leaves the page usable.
            video_input.set_input_files(str(serve_media["corrupt"]))
            page.wait_for_function(
                "document.querySelector('#media-status').innerText.includes('Cannot use this upload')", timeout=30_000
            )
            assert "corrupt.mp4" in page.locator("#media-status").inner_text()
            # The click event itself: the video player's overlay icon can lie over the button while
            # the failed upload's preview settles, and a pointer click then lands on the overlay.
            page.locator("#video-input button[aria-label='Clear']").first.dispatch_event("click")

            # A good clip: the preview shows the frames the model samples and the waveform it hears.
            video_input.set_input_files(str(serve_media["clip"]))
            page.wait_for_function("document.querySelectorAll('#frames-preview img').length === 8", timeout=30_000)
            page.locator("#waveform img, #waveform svg").first.wait_for(timeout=30_000)

            page.locator("#question textarea").fill(QUESTION)
            page.locator("#send").click()
            seen: list[str] = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                bots = page.locator("#chatbot .bot")
                now = bots.last.inner_text() if bots.count() else ""
                if now and (not seen or now != seen[-1]):
                    seen.append(now)
                if page.locator("#media-status").inner_text().strip() == "Done.":
                    break
                time.sleep(0.03)
            final = page.locator("#chatbot .bot").last.inner_text()
            assert "clip.mp4" in page.locator("#chatbot .user").last.inner_text()
            # Dismiss the bad upload's notices (those not expired yet) so the screenshot shows the chat.
            page.evaluate("document.querySelectorAll('[data-testid=toast-close]').forEach(b => b.click())")
            page.wait_for_function("document.querySelectorAll('[data-testid=toast-close]').length === 0", timeout=20_000)
            shot = tmp_path / "serve_ui.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copy(shot, DOCS / "serve_ui.png")

            # Regenerate re-answers the same question (greedy: the same answer); Clear empties the chat.
            page.locator("#regenerate").click()
            page.wait_for_function("document.querySelector('#media-status').innerText.trim() === 'Thinking...'", timeout=30_000)
            page.wait_for_function("document.querySelector('#media-status').innerText.trim() === 'Done.'", timeout=120_000)
            assert page.locator("#chatbot .bot").count() == 1
            assert words(page.locator("#chatbot .bot").last.inner_text()) == words(final)
            page.locator("#clear").click()
            page.wait_for_function("document.querySelectorAll('#chatbot .bot').length === 0", timeout=30_000)
        finally:
            browser.close()

    assert page_done(seen, final), f"the answer grew over several updates: {seen!r}"
    # The UI's answer is the model's greedy answer to the same clip and question (via the API).
    client = openai.OpenAI(base_url=f"{default_server}/v1", api_key="unused", max_retries=0, timeout=120)
    content = [{"type": "video_url", "video_url": {"url": data_url(serve_media["clip"], "video/mp4")}}, {"type": "text", "text": QUESTION}]
    api_answer = client.chat.completions.create(model="default", messages=[{"role": "user", "content": content}])
    assert words(final) == words(api_answer.choices[0].message.content)


def page_done(seen: list[str], final: str) -> bool:
    """Streaming: at least two partial answers were shown before the final one, each a prefix of it."""
    partial = [s for s in seen if s != final]
    return len(partial) >= 2 and all(words(final)[: len(words(p)) - 1] == words(p)[:-1] for p in partial)
