"""The README's picture of the review stats page: the constructed decisions
(``constructed_reviews``) through the production figures and the page's own template, shown in
headless Chromium and saved as a PNG. (The item and history pages are pictured by the browser
tests, against a running api-server: ``/tmp/earmark-review.png``, ``/tmp/earmark-history.png``.)

    python -m earmark_dev.review_screenshot --out docs/review-stats.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from earmark.review.stats import review_stats
    from earmark.store.db import Store
    from earmark.web.shared import TEMPLATES
    from earmark_dev.constructed_reviews import (
        DAY,
        SELF_HARM_BELOW,
        SELF_HARM_SAMPLES,
        THRESHOLD,
        build,
    )
    from earmark_dev.report_screenshot import screenshot

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/review-stats.png"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        store = Store.from_url(f"sqlite:///{scratch}/results.db")
        store.migrate()
        build(store)
        stats = review_stats(store, DAY, "2026-11-30", THRESHOLD, "Europe/London")
        store.dispose()
        html = TEMPLATES.env.get_template("stats.html").render(
            base="",
            page="stats",
            title="Review stats",
            reviewer="cleo",
            stats=stats,
            qa_share=1.0,
            sample_share=len(SELF_HARM_SAMPLES) / len(SELF_HARM_BELOW),
        )
        page_file = Path(scratch) / "stats.html"
        page_file.write_text(html, encoding="utf-8")
        screenshot(page_file, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
