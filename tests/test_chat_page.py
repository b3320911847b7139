"""The chat page at / in a real headless browser (Debian's chromium and
chromium-driver, driven by selenium; `make setup` installs them where it can):
it shows the model, streams an answer, keeps the conversation for a second
turn and forgets it on reset."""
from __future__ import annotations

import shutil

import pytest

from support.server import ServerProcess

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra has it)")

pytestmark = pytest.mark.real

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("no chromium/chromedriver on this machine (make setup installs Debian's where apt-get can)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_chat_page_streams_keeps_the_conversation_and_resets(browser, smollm2_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    with ServerProcess(smollm2_path, "--ctx", "2048") as srv:
        browser.get(srv.url + "/")
        wait.until(lambda d: "SmolLM2" in d.find_element(By.ID, "meta").text)

        def turn(text: str, n_answers: int) -> str:
            box = browser.find_element(By.ID, "input")
            box.send_keys(text)
            browser.find_element(By.ID, "send").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) == n_answers
                       and d.find_element(By.ID, "send").is_enabled()
                       and d.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].text.strip())
            answer = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
            assert "error" not in answer.get_attribute("class")
            return answer.text

        assert turn("What is the capital of France?", 1)
        assert turn("And of Italy?", 2)
        users = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".msg.user")]
        assert users == ["What is the capital of France?", "And of Italy?"]

        browser.find_element(By.ID, "reset").click()
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".msg"))
        assert turn("Say hi", 1)
        assert srv.json("GET", "/health")[0] == 200
