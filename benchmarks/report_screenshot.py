"""Render a study's report, time it, and save a PNG screenshot taken in headless Chromium.

    python benchmarks/report_screenshot.py runs/quickstart [-o reports/quickstart.html] [--png reports/quickstart.png]
                                           [--width 1400] [--height 1300] [--json]

Runs `optiseg report` in a fresh process, as a user would, and prints the file's
size, the command's wall time (Python start-up and imports included) and the
time `optiseg report` itself measured. The screenshot shows the top of the page
(the trade-off plot); raise --height to see more. Needs Debian's `chromium`
(`apt-get install chromium`), run with the flags that keep it off the network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars"]


def find_chromium() -> str:
    found = os.environ.get("OPTISEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        sys.exit("Chromium not found: install it with `apt-get install chromium`, or set OPTISEG_CHROMIUM")
    return found


def render(study: str, out: Path) -> tuple[dict, float]:
    """Run `optiseg report STUDY -o OUT --json`; returns its JSON answer and the command's wall time."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "optiseg", "report", study, "-o", str(out), "--json"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"optiseg report failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout), wall


def screenshot(page: Path, png: Path, width: int, height: int) -> float:
    """Save a PNG of ``page`` loaded from file:// in headless Chromium; returns the seconds it took."""
    chromium = find_chromium()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="optiseg-chromium-") as profile:
        start = time.perf_counter()
        done = subprocess.run(
            [chromium, *CHROMIUM_ARGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             f"--screenshot={png.resolve()}", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=180,
        )
        seconds = time.perf_counter() - start
    if done.returncode != 0 or not png.is_file():
        sys.exit(f"chromium could not take the screenshot ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="study folder or config file, as for `optiseg report`")
    parser.add_argument("-o", "--output", type=Path, help="HTML file (default: reports/<study folder name>.html)")
    parser.add_argument("--png", type=Path, help="screenshot file (default: the HTML file's name with .png)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1300)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    out = args.output or Path("reports") / f"{Path(args.study).stem}.html"
    png = args.png or out.with_suffix(".png")
    result, wall = render(args.study, out)
    shot = screenshot(out, png, args.width, args.height)
    figures = {
        "report": str(out), "size_mb": round(out.stat().st_size / 2**20, 2), "report_seconds": result["seconds"],
        "command_seconds": round(wall, 2), "trials": result["trials"], "front": result["front"],
        "screenshot": str(png), "screenshot_seconds": round(shot, 2),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"{out}: {figures['size_mb']} MB, {result['trials']} trials, {result['front']} on the front")
        print(f"optiseg report: {result['seconds']:.2f} s inside the command, {wall:.2f} s for the whole command")
        print(f"screenshot: {png} ({args.width}x{args.height}, {shot:.1f} s in headless Chromium)")


if __name__ == "__main__":
    main()
