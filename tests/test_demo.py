"""`c360 demo` (the README's `make run`) on a fresh database: sync -> identity -> loyalty -> analytics -> service fill
what a user opens first. Every active golden customer has measures, an RFM cell, a lifecycle stage, a
CLV and tags; households appear for shared addresses; the report opens offline; the service step leaves
its cases, care actions and surveys to look at."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import create_database, drop_database, fetch_rows, server_url

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


async def test_the_demo_fills_every_customers_crm_view(tmp_path: Path) -> None:
    url = await create_database(server_url(), "c360_demo")
    engine = create_async_engine(url)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("C360_", "PREFECT_"))}
        env.update(
            C360_DATABASE_URL=url,
            C360_DATA_DIR=str(tmp_path / "data"),
            PREFECT_HOME=str(tmp_path / "prefect"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            COLUMNS="200",
        )
        args = ["demo", "--no-serve", "--seed", "7", "--people", "250", "--orders", "900"]
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "api.cli", *args, "--pos-files", "20"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "Traceback" not in result.stderr

        [(active,)] = await fetch_rows(engine, "select count(*) from golden_customer where status = 'active'")
        assert active > 100
        [(measured, in_cell, staged, with_clv, buyers, predicted, tagged)] = await fetch_rows(
            engine,
            "select count(m.customer_id), count(m.rfm_cell), count(m.lifecycle_stage),"
            " count(m.clv_historical_fen), count(*) filter (where m.order_count > 0),"
            " count(m.clv_predicted_fen) filter (where m.order_count > 0),"
            " count(*) filter (where exists (select 1 from customer_tag t where t.customer_id = g.id))"
            " from golden_customer g left join customer_metrics m on m.customer_id = g.id"
            " where g.status = 'active'",
        )
        assert (measured, in_cell, staged, with_clv, tagged) == (active,) * 5
        # Buyers have a predicted CLV from the fitted model; the never-bought sit in the prospect cell.
        assert predicted == buyers > 0
        [(prospects,)] = await fetch_rows(
            engine,
            "select count(*) from customer_metrics where order_count = 0 and rfm_cell <> 'prospect'",
        )
        assert prospects == 0
        [(households,)] = await fetch_rows(engine, "select count(*) from household")
        assert households > 0
        [(members,)] = await fetch_rows(engine, "select count(*) from membership")
        assert members == active

        # The service step: a complaint closed after its eight steps, a breached one still open, the care
        # outbox with pending and explained suppressed actions, surveys scored perceived over expected.
        assert "after 8 steps" in result.stdout.replace("\n", " ")
        [(closed_steps,)] = await fetch_rows(
            engine,
            "select count(*) from case_event e join service_case s on s.id = e.case_id where s.type = 'complaint'"
            " and s.status = 'closed' and s.points_granted > 0 and e.kind in ('opened', 'transition')",
        )
        assert closed_steps == 8
        [(breached,)] = await fetch_rows(
            engine,
            "select count(*) from service_case where closed_at is null and resolve_breached_at is not null",
        )
        assert breached == 1
        [(pending, explained, unexplained)] = await fetch_rows(
            engine,
            "select count(*) filter (where state = 'pending'),"
            " count(*) filter (where state = 'suppressed' and suppressed_reason is not null),"
            " count(*) filter (where state = 'suppressed' and suppressed_reason is null) from care_action",
        )
        assert pending > 0 and explained > 0 and unexplained == 0
        [(scored,)] = await fetch_rows(
            engine, "select count(*) from survey_response where expected_score > 0 and perceived_score > 0"
        )
        assert scored >= 1

        report = tmp_path / "data" / "report.html"
        page = report.read_text(encoding="utf-8")
        assert str(report) in result.stdout.replace("\n", "")
        assert "<svg" in page or "<script" in page
        # Self-contained: nothing is fetched from another host.
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    finally:
        await engine.dispose()
        await drop_database(url)
