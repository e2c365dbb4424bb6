"""srdeploy's web pages in a real browser: Debian's ``chromium``, headless, driven by ``browser/drive.mjs``
(puppeteer-core, installed by ``npm ci`` in ``benchmarks/browser``), pages and images on loopback servers
(``runtime.web_serve``: the COOP/COEP headers of WebAssembly threads). For the web tests and the web benchmark."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote, urlencode

from ..runtime import web_serve

DRIVER = Path(__file__).resolve().parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SWIFTSHADER_WEBGPU = "--enable-unsafe-webgpu --use-angle=swiftshader --use-webgpu-adapter=swiftshader"


def unavailable() -> str | None:
    """Why the browser tests cannot run here, naming what to install; None when they can."""
    if not Path(CHROMIUM).is_file():
        return f"no chromium at {CHROMIUM}: apt-get install chromium (or set $CHROMIUM)"
    if shutil.which("node") is None:
        return "no node on PATH: install Node.js 18 or later"
    if not (DRIVER / "node_modules" / "puppeteer-core").is_dir():
        return f"puppeteer-core is not installed: npm ci --prefix {DRIVER}"
    return None


@dataclass
class PageResult:
    """What a page showed when it finished: its title, its one-line error, its report (parsed), the output PNG."""

    title: str
    error: str | None
    report: dict | None
    output: Path | None
    console: list[str]
    images: dict  # id → {natural: [w, h], box: [left, top, width, height]} of the page's before/after images
    driver_error: str | None = None

    @property
    def done(self) -> bool:
        return self.title.startswith("done")


class Browser:
    """A page folder and an image folder served on loopback, and pages of that folder opened in chromium."""

    def __init__(self, page_base: str, image_base: str, scratch: Path):
        self.page_base, self.image_base, self.scratch = page_base, image_base, scratch

    def url(self, image: str | None = None, page: str = "index.html", **params) -> str:
        query = {**({"image": self.image_base + quote(image)} if image else {}), **params}
        return f"{self.page_base}{page}" + (f"?{urlencode(query)}" if query else "")

    def open(self, urls: list[str], screenshot: Path | None = None, flags: str = "",
             timeout_s: float = 300) -> list[PageResult]:
        """Each URL in one browser, one after another; the output PNG of each saved in the scratch folder; a
        screenshot of the last page where asked."""
        jobs = [{"url": url, "output": str(self.scratch / f"output_{i}.png"), "timeout_ms": int(timeout_s * 1000)}
                for i, url in enumerate(urls)]
        if screenshot is not None:
            jobs[-1]["screenshot"] = str(screenshot)
        listing = self.scratch / "jobs.json"
        listing.write_text(json.dumps(jobs))
        done = subprocess.run(["node", str(DRIVER / "drive.mjs"), str(listing)], capture_output=True, text=True,
                              timeout=timeout_s * len(urls) + 60, env={**os.environ, "CHROMIUM": CHROMIUM,
                                                                      "CHROMIUM_FLAGS": flags})
        if done.returncode != 0:
            raise RuntimeError(f"the browser driver failed: {done.stderr.strip()[-600:]}")
        return [PageResult(r["title"], r["error"], json.loads(r["report"]) if r["report"] else None,
                           Path(r["output"]) if r["output"] and not r["output"].startswith("data:") else None,
                           r["console"], r.get("images") or {}, r.get("driver_error")) for r in json.loads(done.stdout)]


@contextmanager
def browser(page_folder: str | Path, image_folder: str | Path, scratch: Path | None = None) -> Iterator[Browser]:
    """A ``Browser`` of ``page_folder`` (the web export) and ``image_folder`` (what ``?image=`` names), each on its
    own loopback server, stopped on exit. The pages' PNGs go into ``scratch`` (kept), or a temporary folder removed
    on exit."""
    page, page_base = web_serve.in_background(page_folder)
    files, image_base = web_serve.in_background(image_folder)
    try:
        if scratch is not None:
            scratch.mkdir(parents=True, exist_ok=True)
            yield Browser(page_base, image_base, Path(tempfile.mkdtemp(prefix="pages-", dir=scratch)))
        else:
            with tempfile.TemporaryDirectory(prefix="srdeploy-browser-") as temporary:
                yield Browser(page_base, image_base, Path(temporary))
    finally:
        page.shutdown()
        files.shutdown()
