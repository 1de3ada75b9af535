"""The playground in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium).

A person's path through the page: attach an image (file picker and drag and drop), type, watch the
answer stream in, get a generated image, stop a video generation half way (the generator really
stops), see errors in place and carry on. Screenshots at desktop and phone width go to
test-artifacts/web/. ``make test`` installs the browser (services/web/service.mk); without it these
tests skip, saying why.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from modaverse_runtime import samples

from .browser import DESKTOP, chrome, require_browser
from .stack import Stack

PHONE = (390, 844)

require_browser()

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# Records every text the answer shows, so a test can tell streamed text from text that arrived whole.
WATCH_TEXT = """
window.__texts = [];
new MutationObserver(() => {
  const answers = document.querySelectorAll('.msg.assistant .text');
  const last = answers[answers.length - 1];
  if (last) window.__texts.push(last.textContent);
  if (document.querySelector('.gen progress')) window.__sawProgress = true;
}).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
"""

DROP_FILE = """
const [b64, name, type] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, {type}));
document.dispatchEvent(new DragEvent('dragenter', {dataTransfer: transfer, bubbles: true, cancelable: true}));
document.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chrome(f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--autoplay-policy=no-user-gesture-required") as driver:
        yield driver


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 90) -> Any:
    return WebDriverWait(driver, timeout, 0.05, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def open_page(driver: WebDriver, url: str, size: tuple[int, int] = DESKTOP) -> None:
    driver.set_window_size(*size)
    driver.get(url)
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")
    driver.execute_script(WATCH_TEXT)


def models_loaded(driver: WebDriver) -> bool:
    script = "return [...document.querySelectorAll('#model-image option')].map((o) => o.textContent)"
    return any("image-tiny" in label for label in driver.execute_script(script))


def answers(driver: WebDriver) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")


def finished(driver: WebDriver, count: int) -> bool:
    done = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant.done")
    return len(done) >= count and not driver.find_element(By.ID, "send").get_attribute("disabled")


def send(driver: WebDriver, text: str) -> int:
    """Type (Shift+Enter between lines) and press Enter; returns how many answers there will be."""
    count = len(answers(driver)) + 1
    box = driver.find_element(By.ID, "prompt")
    for i, line in enumerate(text.split("\n")):
        if i:
            box.send_keys(Keys.SHIFT, Keys.ENTER, Keys.NULL)
        box.send_keys(line)
    box.send_keys(Keys.ENTER)
    wait(driver, lambda d: len(answers(d)) >= count)
    return count


def set_steps(driver: WebDriver, modality: str, steps: int) -> None:
    field = driver.find_element(By.ID, f"steps-{modality}")
    field.clear()
    field.send_keys(str(steps))


def screenshot(driver: WebDriver, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    return path


def test_chat_with_an_attached_image_streams_the_answer(
    browser: WebDriver, stack: Stack, tmp_path: Path, artifacts: Path
) -> None:
    open_page(browser, stack.url)
    wait(browser, models_loaded)
    picture = tmp_path / "star.png"
    picture.write_bytes(samples.make_image("star", "green"))
    browser.find_element(By.ID, "file-input").send_keys(str(picture))
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#attachments .chip[data-kind=image]"))
    # SLOW: the scripted LLM writes 8 characters per 0.2 s, so the page gets the text in pieces
    count = send(browser, "SLOW Modality: [TEXT] Prompt: a green star on white, nothing else")
    wait(browser, lambda d: finished(d, count))
    answer = answers(browser)[-1]
    assert answer.find_element(By.CSS_SELECTOR, ".text").text == "a green star on white, nothing else"
    texts = [t for t in browser.execute_script("return window.__texts") if t]
    partial = {t for t in texts if t != "a green star on white, nothing else"}
    assert len(partial) >= 2, texts  # seen growing, not only whole
    assert all("a green star on white, nothing else".startswith(t) for t in partial)
    # the user's bubble shows the picture, the attachment strip is empty again
    assert browser.find_elements(By.CSS_SELECTOR, ".msg.user .thumbs img")
    assert browser.find_elements(By.CSS_SELECTOR, "#attachments .chip") == []
    # the image reached the LLM as an image block (modality 2)
    blocks = [s.embeddings.modality for s in stack.llm.requests[-1].messages[-1].segments if s.HasField("embeddings")]
    assert blocks == [2]
    # the meta-response is there, folded
    meta = answer.find_element(By.CSS_SELECTOR, "details.meta")
    assert meta.get_attribute("open") is None
    meta.find_element(By.TAG_NAME, "summary").click()
    assert "Modality: [TEXT] Prompt:" in meta.find_element(By.TAG_NAME, "pre").text
    screenshot(browser, artifacts, "desktop-chat")


def test_generated_image_appears_and_history_is_kept(browser: WebDriver, stack: Stack, artifacts: Path) -> None:
    open_page(browser, stack.url)
    wait(browser, models_loaded)
    set_steps(browser, "image", 2)
    count = send(browser, "Here is your picture.\nModality: [IMAGE] Prompt: a red circle")
    image = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant .gen img.result"))[0]
    wait(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
    wait(browser, lambda d: finished(d, count))
    assert browser.execute_script("return window.__sawProgress") is True  # a progress bar showed while it drew
    assert image.get_attribute("src").startswith(f"{stack.url}/v1/files/file-")
    assert answers(browser)[-1].find_element(By.CSS_SELECTOR, ".text").text == "Here is your picture."
    label = answers(browser)[-1].find_element(By.CSS_SELECTOR, ".gen .label").text
    assert "image · image-tiny" in label
    screenshot(browser, artifacts, "desktop-image")
    # a second turn carries the first one as history
    count = send(browser, "Modality: [TEXT] Prompt: and again")
    wait(browser, lambda d: finished(d, count))
    assert [m.role for m in stack.llm.requests[-1].messages] == [1, 2, 1]
    # phone width: nothing overflows sideways, the composer and the result are on screen
    browser.find_element(By.CSS_SELECTOR, "#options summary").click()  # fold the options away
    browser.set_window_size(*PHONE)
    wait(browser, lambda d: d.execute_script("return window.innerWidth") <= PHONE[0])
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    assert browser.find_element(By.ID, "prompt").is_displayed()
    assert browser.find_element(By.ID, "send").is_displayed()
    browser.execute_script("arguments[0].scrollIntoView()", image)
    assert image.size["width"] <= PHONE[0]
    screenshot(browser, artifacts, "phone-image")


def test_stop_cancels_a_video_generation(browser: WebDriver, stack: Stack, artifacts: Path) -> None:
    stats = stack.generators["video"].generator.stats
    interrupted = stats.interrupted
    cancelled = REGISTRY.get_sample_value("modaverse_web_cancelled_total", {"route": "/v1/chat/completions"}) or 0
    open_page(browser, stack.url)
    wait(browser, models_loaded)
    set_steps(browser, "video", 400)  # far longer than this test waits
    count = send(browser, "Modality: [VIDEO] Prompt: a square sliding slowly")
    bar = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".gen[data-modality=video] progress"))[0]
    wait(browser, lambda d: float(bar.get_attribute("value") or 0) >= 1)  # it is denoising
    browser.find_element(By.ID, "stop").click()
    wait(browser, lambda d: finished(d, count))
    answer = answers(browser)[-1]
    assert answer.find_element(By.CSS_SELECTOR, ".status").text == "stopped"
    assert "stopped" in answer.find_element(By.CSS_SELECTOR, ".gen .count").text
    assert answer.find_elements(By.CSS_SELECTOR, "video.result") == []
    screenshot(browser, artifacts, "desktop-stopped")
    # the generator really stopped, long before its 400 steps
    deadline = time.monotonic() + 30
    while stats.interrupted == interrupted:
        assert time.monotonic() < deadline, "the video generation was not interrupted"
        time.sleep(0.05)
    assert stats.interrupted == interrupted + 1
    after = REGISTRY.get_sample_value("modaverse_web_cancelled_total", {"route": "/v1/chat/completions"})
    assert after == cancelled + 1
    # and the page carries on
    count = send(browser, "Modality: [TEXT] Prompt: still here")
    wait(browser, lambda d: finished(d, count))
    assert answers(browser)[-1].find_element(By.CSS_SELECTOR, ".text").text == "still here"
    # the stopped turn stays in the history as what the LLM wrote (it had finished; only the video was stopped)
    turns = stack.llm.requests[-1].messages
    assert [m.role for m in turns] == [1, 2, 1]
    assert turns[1].segments[0].text.startswith("Modality: [VIDEO] Prompt: a square sliding slowly")
    # "New chat" starts over: an empty page, and no history sent
    browser.find_element(By.ID, "new-chat").click()
    assert answers(browser) == []
    count = send(browser, "Modality: [TEXT] Prompt: fresh start")
    wait(browser, lambda d: finished(d, count))
    assert len(stack.llm.requests[-1].messages) == 1


def test_errors_show_in_place_and_the_page_stays_usable(browser: WebDriver, stack: Stack, artifacts: Path) -> None:
    open_page(browser, stack.url)
    wait(browser, models_loaded)
    # a file that says it is a PNG but is not: dropped onto the page, refused by the server
    browser.execute_script(DROP_FILE, base64.b64encode(b"certainly not a png").decode(), "fake.png", "image/png")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#attachments .chip[data-kind=image]"))
    count = send(browser, "what is this?")
    wait(browser, lambda d: finished(d, count))
    error = answers(browser)[-1].find_element(By.CSS_SELECTOR, ".error")
    assert "400" in error.text
    assert "not a recognised image" in error.text
    screenshot(browser, artifacts, "desktop-error")
    # a real image dropped the same way works, and the failed turn did not enter the history
    browser.execute_script(DROP_FILE, base64.b64encode(samples.make_image()).decode(), "circle.png", "image/png")
    count = send(browser, "and this one?")
    wait(browser, lambda d: finished(d, count))
    assert "messages=1 blocks=2:(1, 256)" in answers(browser)[-1].find_element(By.CSS_SELECTOR, ".text").text


def test_gateway_down_is_shown_on_the_page(browser: WebDriver, stack: Stack, artifacts: Path) -> None:
    from tests.integration.in_process import free_port

    orphan = stack.start_web(gateway=f"127.0.0.1:{free_port()}")
    open_page(browser, orphan.url, PHONE)
    notice = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".notice"))[0]
    assert "503" in notice.text
    count = send(browser, "hello?")
    wait(browser, lambda d: finished(d, count))
    assert "unavailable" in answers(browser)[-1].find_element(By.CSS_SELECTOR, ".error").text
    assert browser.find_element(By.ID, "prompt").is_enabled()
    screenshot(browser, artifacts, "phone-gateway-down")
