"""The README's picture of `dcgan demo`: the page of a checkpoint after Generate and Interpolate, as a PNG.

    python docs/demo_screenshot.py --checkpoint runs/conditional-2ep [--out docs/img/demo.png]

Starts `dcgan demo` on a free port, opens the page in Debian's headless Chromium through Playwright
(pip install playwright; apt-get install chromium: no browser download), refuses every request that
is not to the demo's own server, presses the buttons and screenshots the whole page. Trains nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Route, sync_playwright

CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking"]


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_served(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Return once `url` answers; exit with the server's own message if it stops first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"dcgan demo exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.25)
    sys.exit(f"dcgan demo did not answer at {url} within {timeout:g} s")


def screenshot(url: str, out: Path, *, chromium: str, seed: int, to_seed: int, width: int) -> None:
    """Generate and interpolate on the page at `url`, then write the whole page to `out`."""
    outside: list[str] = []

    def only_the_demo(route: Route) -> None:
        if route.request.url.startswith((url, "data:", "blob:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 800})
            page.route("**/*", only_the_demo)
            page.goto(url)
            page.locator("#seed input").fill(str(seed))
            page.locator("#to_seed input").fill(str(to_seed))
            page.locator("#generate").click()
            page.locator("#grid img").wait_for(timeout=60_000)
            page.locator("#interpolate").click()
            page.locator("#walk img").wait_for(timeout=60_000)
            page.wait_for_timeout(500)  # the images' layout settles
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    if outside:
        sys.exit(f"the page asked for something other than its server: {outside}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint file or a run directory")
    parser.add_argument("--out", default="docs/img/demo.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--to-seed", type=int, default=1, help="seed B of the interpolation")
    parser.add_argument("--width", type=int, default=1100, help="browser window width in pixels")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    process = subprocess.Popen([sys.executable, "-m", "dcgan", "demo", "--checkpoint", args.checkpoint,
                                "--port", str(port), "--device", "cpu"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_until_served(url, process)
        screenshot(url, Path(args.out), chromium=args.chromium, seed=args.seed, to_seed=args.to_seed,
                   width=args.width)
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
