"""Headless Chromium for the page tests (tests marked ``browser``).

Without ``/usr/bin/chromium`` or the playwright package a test is skipped, or fails
when ``CNNLENS_REQUIRE_BROWSER`` is set (so a machine that should run them notices).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_browser() -> None:
    """Skip (or fail, under ``CNNLENS_REQUIRE_BROWSER``) without Chromium and playwright."""
    if not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None:
        if os.environ.get("CNNLENS_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} and the playwright package are required here")
        pytest.skip(f"{CHROMIUM} or playwright is not installed")


@contextmanager
def open_page(path: Path, width: int = 1280, height: int = 900) -> Iterator[tuple[Any, dict]]:
    """``path`` loaded in headless Chromium at ``width`` x ``height``.

    Yields ``(page, seen)``: the playwright page, and ``seen["requests"]`` (every URL
    requested) and ``seen["errors"]`` (console errors and uncaught exceptions).
    """
    require_browser()
    from playwright.sync_api import sync_playwright

    seen: dict[str, list[str]] = {"requests": [], "errors": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("request", lambda r: seen["requests"].append(r.url))
            page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
            page.on("pageerror", lambda exc: seen["errors"].append(str(exc)))
            response = page.goto(path.resolve().as_uri(), wait_until="load")
            assert response is None or response.ok
            yield page, seen
        finally:
            browser.close()


def outside_requests(path: Path, seen: dict) -> list[str]:
    """Requests other than the page itself and ``data:`` URIs (there should be none)."""
    url = path.resolve().as_uri()
    return [u for u in seen["requests"] if u != url and not u.startswith("data:")]
