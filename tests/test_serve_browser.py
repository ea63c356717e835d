"""`shiftsr serve` driven in headless Chromium (Debian's chromium and chromium-driver, selenium from the [browser]
extra): start the server on a free port, upload an image, wait for the result, check it, save a screenshot."""
from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

SETTINGS = "seed=4&steps=2&samples=2"
READ_DOWNLOAD = """
const done = arguments[arguments.length - 1];
fetch(document.getElementById("download").href).then((reply) => reply.blob()).then((blob) => {
  const reader = new FileReader();
  reader.onload = () => done(reader.result.split(",")[1]);
  reader.readAsDataURL(blob);
}).catch((error) => done("error: " + error));
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def server(tiny_model, tmp_path):
    """The URL of `shiftsr serve` running in a subprocess on a free port."""
    port = free_port()
    log = open(tmp_path / "serve.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "shiftsr", "serve", "--port", str(port), "--device", "cpu",
                                "--model", str(tiny_model)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/api/models", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log.seek(0)
                pytest.fail(f"shiftsr serve did not come up: {log.read()}")
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=20)
    log.close()


@pytest.fixture()
def browser():
    """Headless Chromium through chromedriver."""
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,1000"):
        options.add_argument(argument)
    session = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)
    yield session
    session.quit()


def test_page_upscales_compares_and_downloads(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    source = tmp_path / "gradient.png"
    ramp = np.linspace(0, 255, 32, dtype=np.float32)
    rgb = np.stack([ramp[None, :].repeat(24, 0), ramp[:24, None].repeat(32, 1), 255 - ramp[None, :].repeat(24, 0)], -1)
    Image.fromarray(rgb.astype(np.uint8)).save(source)
    browser.get(server)
    WebDriverWait(browser, 30).until(lambda page: page.find_elements(By.CSS_SELECTOR, "#model option"))
    browser.find_element(By.ID, "file").send_keys(str(source))
    for field, value in (("steps", "2"), ("samples", "2"), ("seed", "4")):
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.ID, "run").click()
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 120).until(lambda page: status.get_attribute("data-state") in ("done", "error"))
    assert status.get_attribute("data-state") == "done", status.text
    natural = "const o = document.getElementById(arguments[0]); return [o.naturalWidth, o.naturalHeight];"
    assert browser.execute_script(natural, "output") == [128, 96]
    assert browser.execute_script(natural, "spread") == [128, 96]
    assert browser.find_element(By.ID, "spread-figure").is_displayed()
    assert float(browser.find_element(By.ID, "progress").get_attribute("value")) == 1.0
    downloaded = base64.b64decode(browser.execute_async_script(READ_DOWNLOAD))
    request = urllib.request.Request(f"{server}/api/upscale?{SETTINGS}", data=source.read_bytes(), method="POST")
    assert downloaded == urllib.request.urlopen(request, timeout=60).read()
    screenshot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(screenshot)) and Path(screenshot).stat().st_size > 10_000
    print(f"screenshot: {screenshot}")
