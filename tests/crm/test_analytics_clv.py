"""CLV: the BG/NBD and Gamma-Gamma fits recover a known generating process, their forecasts land near what
the process then does, and a full run stores the fit and predicts for every purchasing customer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.analytics.clv import (
    BgNbd,
    GammaGamma,
    expected_purchases,
    expected_spend,
    fit_bgnbd,
    fit_gamma_gamma,
    simulate,
)
from crm.analytics.service import recompute_in
from tests.crm.analytics_support import rules
from tests.crm.loyalty_support import one

TRUTH = BgNbd(r=0.8, alpha=60.0, a=0.9, b=3.0)
SPEND = GammaGamma(p=6.0, q=4.0, v=15.0)


def test_the_fit_recovers_the_generating_process() -> None:
    x, t_x, big_t, m, future = simulate(8000, TRUTH, SPEND, 365.0)
    bg, _ = fit_bgnbd(x, t_x, big_t)
    assert bg.r == pytest.approx(TRUTH.r, rel=0.15)
    assert bg.alpha == pytest.approx(TRUTH.alpha, rel=0.2)
    assert bg.a == pytest.approx(TRUTH.a, rel=0.3)
    assert bg.b == pytest.approx(TRUTH.b, rel=0.35)
    # The forecast of the next year's purchases lands near what the process then did, in total and by group.
    predicted = expected_purchases(bg, 365.0, x, t_x, big_t)
    assert predicted.sum() == pytest.approx(future.sum(), rel=0.08)
    for lo, hi in ((0, 0), (1, 2), (3, 100)):
        group = (x >= lo) & (x <= hi)
        assert predicted[group].mean() == pytest.approx(future[group].mean(), rel=0.2)
    gg = fit_gamma_gamma(x + 1, m)
    # The base's mean spend per purchase p*v/(q-1) is identified even where p, q, v trade off.
    assert gg.p * gg.v / (gg.q - 1) == pytest.approx(SPEND.p * SPEND.v / (SPEND.q - 1), rel=0.1)
    spend = expected_spend(gg, x + 1, m)
    assert np.all(spend > 0)


async def test_a_full_run_stores_the_fit_and_predicts(conn: AsyncConnection) -> None:
    """600 customers drawn from the process, landed as orders: the stored parameters are near the truth and
    every purchasing customer gets a prediction; an incremental run predicts from the stored fit."""
    now = datetime(2026, 6, 1, tzinfo=UTC)
    x, t_x, big_t, m, _ = simulate(600, TRUTH, SPEND, 365.0, seed=3)
    await conn.execute(
        sa.text(
            "insert into channel (code, family, name, trust_rank) values ('own', 'own', 'own', 10) on conflict do nothing"
        )
    )
    ids = (
        (
            await conn.execute(
                sa.text(
                    "insert into golden_customer (status) select 'active' from generate_series(1, :n) returning id"
                ),
                {"n": len(x)},
            )
        )
        .scalars()
        .all()
    )
    # One row per purchase: the first at -T days, the repeats spread up to the last at -(T - t_x).
    customer, placed, fen = [], [], []
    for cid, xi, txi, ti, mi in zip(ids, x, t_x, big_t, m, strict=True):
        first = now - timedelta(days=float(ti))
        times = [first] + [first + timedelta(days=float(txi) * (k + 1) / xi) for k in range(int(xi))]
        for when in times:
            customer.append(cid)
            placed.append(when)
            fen.append(max(int(mi * 100), 1))
    await conn.execute(
        sa.text(
            "insert into orders (channel_code, external_id, customer_id, status, total_fen, paid_fen, currency, placed_at)"
            " select 'own', 'o' || ordinality, c, 'paid', f, f, 'CNY', p"
            " from unnest(cast(:c as bigint[]), cast(:p as timestamptz[]), cast(:f as bigint[])) with ordinality as u(c, p, f)"
        ),
        {"c": customer, "p": placed, "f": fen},
    )
    counts = await recompute_in(conn, rules(), None, now)
    assert counts.clv_predicted == 600
    params = await one(conn, "select parameters from analytics_model where kind = 'clv'")
    assert params["r"] == pytest.approx(TRUTH.r, rel=0.4)
    assert params["alpha"] == pytest.approx(TRUTH.alpha, rel=0.5)
    assert await one(conn, "select count(*) from customer_metrics where clv_predicted_fen is null") == 0
    fitted_at = await one(conn, "select fitted_at from analytics_model where kind = 'clv'")
    assert fitted_at == now
    before = await one(
        conn, "select clv_predicted_fen from customer_metrics where customer_id = :c", c=ids[0]
    )
    await recompute_in(conn, rules(), {ids[0]}, now + timedelta(days=30))
    assert await one(conn, "select fitted_at from analytics_model where kind = 'clv'") == now
    after = await one(conn, "select clv_predicted_fen from customer_metrics where customer_id = :c", c=ids[0])
    assert after <= before  # a month older without buying: not more valuable
