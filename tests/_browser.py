"""Headless Chromium for tests: the system's Chromium driven by Playwright, kept off the network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM = os.environ.get("OPTISEG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Headless Chromium as root, kept off the network (see the field notes on Chromium).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]

class Visit:
    """A page opened from file:// with every non-file request blocked, and what happened on the way."""

    def __init__(self, browser, path: Path):
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.dialogs: list[str] = []
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on("dialog", self._dialog)
        self.page.goto(path.resolve().as_uri(), wait_until="load")

    def _route(self, route):
        if route.request.url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def wait_for_plots(self) -> None:
        self.page.wait_for_function(
            "() => { const plots = document.querySelectorAll('div.plot');"
            " return plots.length > 0 && Array.from(plots).every(p => p.querySelector('svg.main-svg')); }",
            timeout=30_000,
        )

    def close(self) -> None:
        self.context.close()
