"""docs/serve.png: `shiftsr serve` with the bundled default model in headless Chromium, on a chart drawn here.

No dataset image may enter the repository, so the input is synthetic: stripes, rings, bars and text drawn at
512x512 and brought to 128x128 by bicubic resizing. Needs the [browser] extra and Debian's chromium and
chromium-driver; takes about a minute on a CPU.

    python scripts/serve_screenshot.py
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "serve.png"


def chart(path: Path) -> None:
    """A 128x128 test chart: diagonal stripes, concentric rings, a bar pattern and a word."""
    big = Image.new("RGB", (512, 512), (235, 228, 210))
    draw = ImageDraw.Draw(big)
    for offset in range(0, 512, 16):
        draw.line([(offset, 0), (0, offset)], fill=(60, 90, 140), width=3)
    for diameter, colour in ((200, (200, 60, 50)), (150, (240, 190, 60)), (100, (70, 150, 90)), (50, (40, 40, 60))):
        draw.ellipse([300 - diameter // 2, 300 - diameter // 2, 300 + diameter // 2, 300 + diameter // 2],
                     outline=colour, width=10)
    draw.text((40, 400), "shiftsr", fill=(20, 20, 20), font=ImageFont.load_default(size=64))
    draw.rectangle([330, 40, 480, 190], fill=(30, 110, 200))
    for bar in range(8):
        draw.rectangle([340 + bar * 17, 60, 348 + bar * 17, 170], fill=(250, 250, 250))
    big.resize((128, 128), Image.BICUBIC).save(path)


def serve() -> tuple[subprocess.Popen, str]:
    """`shiftsr serve` on a free port, once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "shiftsr", "serve", "--port", str(port), "--device", "cpu"])
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/api/models", timeout=2).read()
            return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("shiftsr serve did not come up within a minute")


def main() -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1240,1130"):
        options.add_argument(argument)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "chart.png"
        chart(source)
        process, url = serve()
        browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")),
                                   options=options)
        try:
            browser.get(url)
            WebDriverWait(browser, 30).until(lambda page: page.find_elements(By.CSS_SELECTOR, "#model option"))
            browser.find_element(By.ID, "file").send_keys(str(source))
            browser.find_element(By.ID, "samples").send_keys("4")  # a map of where 4 samples disagree
            browser.find_element(By.ID, "run").click()
            status = browser.find_element(By.ID, "status")
            WebDriverWait(browser, 300).until(lambda page: status.get_attribute("data-state") in ("done", "error"))
            if status.get_attribute("data-state") != "done":
                raise SystemExit(f"the upscale failed: {status.text}")
            time.sleep(1)  # the images finish decoding
            browser.save_screenshot(str(OUTPUT))
        finally:
            browser.quit()
            process.terminate()
            process.wait()
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
