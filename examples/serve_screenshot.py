"""A screenshot of ``recycler serve``'s page, as the README shows it (docs/serve.png).

Serves a registry on a free loopback port, opens the page in Debian's headless chromium
(Playwright drives it; no browser is downloaded), waits for every panel to load, selects
a teacher and writes a full-page PNG. The README's picture was made from the demo's registry:

    recycler demo --out recycler-demo
    python examples/serve_screenshot.py --registry sqlite:///recycler-demo/demo.db \\
        --blobs recycler-demo/teachers --out docs/serve.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from recycler.service import ServeOptions, Service

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default="sqlite:///recycler-demo/demo.db")
    parser.add_argument("--blobs", default="recycler-demo/teachers")
    parser.add_argument("--out", type=Path, default=Path("docs/serve.png"))
    parser.add_argument("--teacher", type=int, help="the teacher whose detail to show")
    parser.add_argument("--width", type=int, default=1360)
    args = parser.parse_args()
    service = Service(ServeOptions(args.registry, args.blobs, port=0))
    with (
        service.running() as url,
        sync_playwright() as pw,
        tempfile.TemporaryDirectory(prefix="recycler-chromium-") as profile,
    ):
        browser = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": args.width, "height": 900},
            device_scale_factor=1,
        )
        try:
            page = browser.new_page()
            page.goto(url + (f"#teacher/{args.teacher}" if args.teacher else ""))
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            if args.teacher:
                page.wait_for_selector("#detail:not([hidden])", timeout=30_000)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
        finally:
            browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
