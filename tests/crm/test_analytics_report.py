"""`c360 analytics report` and `c360 crm recompute` as a user runs them: the report is one file that
renders every chart in a headless Chromium with every host but loopback unresolvable; the recompute
command brings one customer or everyone up to date."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm.analytics.config import get_config
from crm.analytics.service import recompute_in
from crm.loyalty.service import in_transaction
from tests.api.test_cli import c360
from tests.conftest import fetch_rows
from tests.crm.loyalty_support import add_customer, add_order

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHARTS = ("rfm-grid", "lifecycle-funnel", "segment-sizes", "clv-distribution", "channel-mix")


def dump_dom(page: Path, tmp_path: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium that can resolve no host."""
    return subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000", "--dump-dom", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip


async def seed(engine: AsyncEngine) -> list[int]:
    now = datetime.now(UTC)

    async def work(conn: AsyncConnection) -> list[int]:
        ids = []
        for i in range(80):  # 64 buyers: enough for the CLV fit (min_customers = 50)
            c = await add_customer(conn, city="上海市" if i % 3 else "杭州市")
            ids.append(c)
            for k in range(i % 5):
                await add_order(conn, c, 5_000 + 1_000 * i, now - timedelta(days=7 * i + 30 * k),
                                channel=("tmall", "jd", "app")[(i + k) % 3])  # fmt: skip
        # Two days of segment sizes: yesterday's run, then today's.
        await recompute_in(conn, get_config(), None, now - timedelta(days=1))
        await recompute_in(conn, get_config(), None, now)
        return ids

    return await in_transaction(engine, work)


async def test_the_report_renders_offline(
    committed_db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    await seed(committed_db)
    out = tmp_path / "report.html"
    done = c360("analytics", "report", "--output", str(out), C360_DATABASE_URL=database_url)
    assert done.returncode == 0, done.stderr
    page = out.read_text(encoding="utf-8")
    # Self-contained: no file or script fetched from anywhere.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert "@import" not in page and "url(" not in page
    assert "王" not in page  # aggregates only, no names
    if CHROMIUM is None:
        message = "needs a headless browser: apt-get install -y chromium"
        if os.environ.get("C360_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    dom = dump_dom(out, tmp_path)
    assert 'data-rendered="true"' in dom.split("<section", 1)[0], dom[:2000]  # the body: the script ran
    for chart in CHARTS:
        section = re.search(rf'<section[^>]*id="{chart}"[^>]*>(.*?)</section>', dom, re.S)
        assert section is not None, chart
        head = re.search(rf'<section[^>]*id="{chart}"[^>]*>', dom)
        assert head is not None and 'data-rendered="true"' in head.group(0), chart
        marks = re.search(r'data-marks="(\d+)"', head.group(0))
        assert marks is not None and int(marks.group(1)) > 0, chart
        assert "<svg" in section.group(1) and re.search(r"<(rect|polyline|circle)", section.group(1)), chart
    # The funnel shows every stage; the grid shows the cells' names.
    assert all(stage in dom for stage in ("potential", "new", "active", "at_risk", "churned", "won_back"))
    assert "冠军客户" in dom or "忠诚客户" in dom


async def test_crm_recompute_for_one_customer_and_for_all(
    committed_db: AsyncEngine, database_url: str
) -> None:
    ids = await seed(committed_db)
    await in_transaction(
        committed_db, lambda conn: conn.execute(sa.text("update customer_metrics set order_count = 99"))
    )
    one = c360("crm", "recompute", "--customer", str(ids[3]), C360_DATABASE_URL=database_url)
    assert one.returncode == 0, one.stderr
    assert "loyalty, analytics" in one.stdout
    rows = await fetch_rows(committed_db, "select customer_id, order_count from customer_metrics order by 1")
    assert [n for c, n in rows if c == ids[3]] == [3]
    assert all(n == 99 for c, n in rows if c != ids[3])
    every = c360("crm", "recompute", C360_DATABASE_URL=database_url)
    assert every.returncode == 0, every.stderr
    rows = await fetch_rows(committed_db, "select count(*) from customer_metrics where order_count = 99")
    assert rows == [(0,)]
