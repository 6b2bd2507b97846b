"""report.html as a reader sees it: opened in headless Chromium (Debian's `chromium` package).

A copy of the page gets a small script that, once everything has loaded, writes what it measured
(each image's natural width, the page's and the widest element's width) into the DOM, which
Chromium's --dump-dom prints. A screenshot of the page is kept as a test artifact under
$CNNPIPE_TEST_ARTIFACTS (or the test's temporary directory); its path is printed.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess

import pytest

from test_report import MANIFEST, write_three_model_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WINDOW_WIDTH = 1280
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium package")

MEASURE = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map(image => ({alt: image.alt, width: image.naturalWidth}));
  const viewport = document.documentElement.clientWidth;
  const overflowing = Array.from(document.body.querySelectorAll("*"))
    .filter(element => element.getBoundingClientRect().right > viewport + 1)
    .map(element => element.tagName + (element.className ? "." + element.className : ""));
  const result = {images, viewport, scrollWidth: document.documentElement.scrollWidth, overflowing};
  const output = document.createElement("pre");
  output.id = "measured";
  output.textContent = JSON.stringify(result);
  document.body.appendChild(output);
});
</script>
"""


def chromium(*arguments, profile):
    """Runs headless Chromium with no network, sync or first-run work; returns its stdout."""
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--hide-scrollbars", *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def artifact_dir(tmp_path):
    directory = os.environ.get("CNNPIPE_TEST_ARTIFACTS") or str(tmp_path / "artifacts")
    os.makedirs(directory, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The report of three models on CIFAR-10 (the widest comparison table): its report.html."""
    root = tmp_path_factory.mktemp("browser")
    _, output_dir = write_three_model_report(root, dataclasses.replace(MANIFEST, name="cifar10"))
    return output_dir / "report.html"


def test_every_image_loads_and_nothing_overflows_the_page(page, tmp_path):
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    dom = chromium(f"--window-size={WINDOW_WIDTH},900", "--virtual-time-budget=10000", "--dump-dom",
                   measured_page.as_uri(), profile=tmp_path / "profile")
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, flags=re.DOTALL)
    assert found, dom[-2000:]
    measured = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    # scatter + overview + per model: curves, confusion matrix and two mistake thumbnails
    assert len(measured["images"]) == 2 + 3 * 4
    assert [image for image in measured["images"] if image["width"] <= 0] == []
    assert measured["scrollWidth"] <= measured["viewport"], measured["overflowing"]
    assert measured["overflowing"] == []


def test_screenshot_is_kept_as_an_artifact(page, tmp_path):
    screenshot = os.path.join(artifact_dir(tmp_path), "report.png")
    chromium(f"--window-size={WINDOW_WIDTH},3000", f"--screenshot={screenshot}", page.as_uri(),
             profile=tmp_path / "profile")
    print(f"report screenshot: {screenshot}")
    with open(screenshot, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(screenshot) > 50_000  # a rendered page, not a blank one
