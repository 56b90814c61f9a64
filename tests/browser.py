"""A page opened in headless Chromium (Debian's package; make test installs it), as a person opens it."""
import json
import os
import re
import shutil
import subprocess

# Runs when the page has loaded: what a person would see, written into the title for --dump-dom.
_PROBE = """<script>window.addEventListener('load', () => { const images = [...document.images];
document.title = 'PROBE' + JSON.stringify({images: images.length,
  broken: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.title || i.alt),
  sections: [...document.querySelectorAll('section')].map(s => s.id)}); });</script>"""


def chromium() -> str:
    path = shutil.which("chromium")
    if not path:
        raise AssertionError("chromium is not installed: `make test` installs Debian's chromium package "
                             "(bin/in-env sh bin/install-browser)")
    return path


def _run(*args: str) -> str:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def open_page(html_path: str, screenshot: str) -> dict:
    """{"images": count, "broken": [names], "sections": [ids]} of the loaded page; a screenshot too."""
    probed = os.path.join(os.path.dirname(screenshot), "probed.html")
    with open(html_path) as f, open(probed, "w") as out:
        out.write(f.read().replace("</body>", _PROBE + "</body>"))
    dom = _run("--virtual-time-budget=10000", "--dump-dom", f"file://{probed}")
    _run("--window-size=1100,3000", f"--screenshot={screenshot}", f"file://{os.path.abspath(html_path)}")
    found = re.search(r"<title>PROBE(.*?)</title>", dom, re.S)
    assert found, "the page did not finish loading in Chromium"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
