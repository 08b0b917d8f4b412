"""The README's picture of the day's report: the constructed day (``constructed_day``) rendered
by the production report code at 11:40, shown in headless Chromium and saved as a PNG.

    python -m earmark_dev.report_screenshot --out docs/day-report.png
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


def screenshot(page_file: Path, out: Path) -> None:
    """``page_file`` opened in headless Chromium, 1300 px wide, saved whole as a PNG."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(page_file.as_uri())
        page.screenshot(path=str(out), full_page=True)
        browser.close()


def main(argv: list[str] | None = None) -> int:
    from earmark.config import Settings
    from earmark.day.report import write_day_report
    from earmark.store.db import Store
    from earmark_dev.constructed_day import DAY, at, build

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/day-report.png"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        store = Store.from_url(f"sqlite:///{scratch}/results.db")
        store.migrate()
        build(store)
        settings = replace(Settings.from_env(), timezone="Europe/London")
        page_file = Path(scratch) / "report.html"
        page_file.write_text(
            write_day_report(settings, store, DAY, "r1", now=at(11, 40)), encoding="utf-8"
        )
        store.dispose()
        screenshot(page_file, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
