"""Same seed, same data; the ground truth matches what the feeds serve; generation is lazy."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from sync.simulator import SimulatorConfig
from sync.simulator.dataset import identity_frame
from sync.simulator.people import POS_DUMMY_PHONES, id_check_digit

ALL_JD = "WAIT_SELLER_STOCK_OUT,WAIT_GOODS_RECEIVE_CONFIRM,FINISHED_L,TRADE_CANCELED,LOCKED"


def _snapshot(sim) -> tuple:
    trades = sim.top("taobao.trades.sold.get", page_size=50, page_no=7)
    members = sim.app_get("/app/api/v1/members", limit=50).json()
    pos = sim.pos_get(limit=50).json()
    return trades["trades_sold_get_response"]["trades"], members, pos, sim.http.get("/_sim/truth").text


def test_same_seed_same_data_other_seed_other_data(start_sim):
    first = _snapshot(start_sim())
    assert _snapshot(start_sim()) == first
    other = _snapshot(start_sim(SimulatorConfig(seed=7)))
    assert other[0] != first[0] and other[3] != first[3]


def _feed_identities(sim) -> dict[str, dict]:
    """record_id -> the row that exposes it, walking every feed like a connector would."""
    found: dict[str, dict] = {}
    for page in range(1, 100):
        trades = sim.top("taobao.trades.sold.get", page_size=100, page_no=page)["trades_sold_get_response"][
            "trades"
        ]["trade"]
        if not trades:
            break
        for t in trades:
            found.setdefault(
                f"tmall:{t['buyer_open_uid']}",
                {
                    "phone": t["receiver_mobile"],
                    "name": t["receiver_name"],
                    "district": t["receiver_district"],
                },
            )
    end = datetime.fromisoformat(sim.http.get("/_sim/clock").json()["now"])
    while end > sim.config.start:
        start = end - timedelta(days=30)
        for page in range(1, 100):
            business = {
                "start_date": f"{start:%Y-%m-%d %H:%M:%S}",
                "end_date": f"{end:%Y-%m-%d %H:%M:%S}",
                "order_state": ALL_JD,
                "page": str(page),
                "page_size": "100",
                "dateType": "1",
            }
            orders = sim.jd(business)["jingdong_pop_order_search_responce"]["searchorderinfo_result"][
                "orderInfoList"
            ]
            if not orders:
                break
            for o in orders:
                found.setdefault(
                    f"jd:{o['open_id_buyer']}",
                    {
                        "phone": o["consigneeInfo"]["mobile"],
                        "name": o["consigneeInfo"]["fullname"],
                        "district": o["consigneeInfo"]["county"],
                    },
                )
        end = start - timedelta(seconds=1)
    cursor = None
    while True:
        body = sim.app_get("/app/api/v1/members", limit=500, **({"cursor": cursor} if cursor else {})).json()
        for m in body["data"]:
            found[f"app:{m['member_no']}"] = {
                "phone": m["mobile"],
                "name": m["name"],
                "district": m["district"],
            }
        cursor = body["next_cursor"]
        if cursor is None:
            break
    after = 0
    while True:
        body = sim.http.get("/wechat/_sim/pushes", params={"after": after, "limit": 1000}).json()
        if not body["items"]:
            break
        for item in body["items"]:
            openid = item["xml"].split("<FromUserName><![CDATA[")[1].split("]]>")[0]
            found.setdefault(f"wechat:{openid}", {})
        after = body["next"]
    for path, key in (
        ("/weibo/2/comments/to_me.json", "comments"),
        ("/weibo/2/statuses/mentions.json", "statuses"),
    ):
        for page in range(1, 100):
            items = sim.weibo(path, count=200, page=page).json()[key]
            if not items:
                break
            for item in items:
                found.setdefault(f"weibo:{item['user']['idstr']}", {"name": item["user"]["screen_name"]})
    cursor = None
    while True:
        body = sim.pos_get(limit=1000, **({"cursor": cursor} if cursor else {})).json()
        for tx in body["data"]:
            external = tx["member_card_no"] or tx["member_phone"]
            if external:
                found.setdefault(f"pos:{external}", {})
        cursor = body["next_cursor"]
        if cursor is None:
            break
    return found


def test_truth_and_feeds_agree(sim):
    truth = _check_truth(sim)
    assert list(truth.record_id) == list(identity_frame().record_id)
    assert set(truth.source) == {"tmall", "jd", "app", "wechat", "weibo", "pos"}


@pytest.mark.parametrize(
    "config",
    [
        SimulatorConfig(seed=3, people=40, orders=60, order_shares={"tmall": 0.5, "pos": 0.5}),
        # Fewer sales than POS members, over a short history: late deliveries straddle the clock.
        SimulatorConfig(seed=5, people=300, orders=60, days=3, order_shares={"pos": 1.0}),
    ],
)
def test_truth_and_feeds_agree_for_tiny_shops(start_sim, config):
    truth = _check_truth(start_sim(config))
    assert "jd" not in set(truth.source)
    assert list(truth.record_id) == list(identity_frame(config=config).record_id)


def _check_truth(sim) -> pd.DataFrame:
    truth = pd.read_csv(io.StringIO(sim.http.get("/_sim/truth").text), dtype=str, keep_default_na=False)
    assert truth.record_id.is_unique
    feeds = _feed_identities(sim)
    dummies = {f"pos:{p}" for p in POS_DUMMY_PHONES}
    assert set(truth.record_id) == set(feeds) - dummies
    rows = truth.set_index("record_id")
    for record_id, seen in feeds.items():
        if record_id in dummies:
            continue
        for column, value in seen.items():
            assert rows.loc[record_id, column] == (value or ""), (record_id, column)
    return truth


def test_truth_is_realistic(sim):
    truth = identity_frame()
    per_person = truth.groupby("true_person_id").source.nunique()
    assert per_person.min() >= 1 and per_person.max() <= 4
    assert (per_person >= 2).mean() > 0.4
    ids = truth.id_number.dropna()
    assert len(ids) > 50 and all(id_check_digit(n[:17]) == n[17] for n in ids)
    app = truth[truth.source == "app"]
    # Different people share common names; some share a household address.
    names = app.groupby("name").true_person_id.nunique()
    assert (names >= 2).sum() >= 3
    addresses = app.dropna(subset=["address"]).groupby("address").true_person_id.nunique()
    assert (addresses >= 2).any()
    assert truth[truth.source == "tmall"].phone.str.contains(r"^\d{3}\*{4}\d{4}$").all()
    assert app.phone.str.match(r"^1[3589]\d{9}$").all()
    # POS cards are app member numbers: the same person on both sides.
    pos_cards = truth[(truth.source == "pos") & truth.member_no.notna()]
    joined = pos_cards.merge(app, on="member_no", suffixes=("_pos", "_app"))
    assert len(joined) == len(pos_cards) and (joined.true_person_id_pos == joined.true_person_id_app).all()


def test_a_million_order_feed_serves_page_5000_lazily(start_sim):
    sim = start_sim(SimulatorConfig(orders=1_000_000, order_shares={"tmall": 1.0}))
    reply = sim.top("taobao.trades.sold.get", page_size=100, page_no=5000)["trades_sold_get_response"]
    assert reply["total_results"] == 1_000_000
    trades = reply["trades"]["trade"]
    assert len(trades) == 100
    stats = sim.http.get("/_sim/stats").json()["feeds"]["tmall"]
    assert stats["rows_materialized"] == 100
    assert stats["timeline_rows"] <= 1000
    window_end = sim.config.now - timedelta(days=40)
    sim.top(
        "taobao.trades.sold.increment.get",
        start_modified=f"{window_end - timedelta(minutes=30):%Y-%m-%d %H:%M:%S}",
        end_modified=f"{window_end:%Y-%m-%d %H:%M:%S}",
        page_size=100,
        page_no=2,
    )
    stats = sim.http.get("/_sim/stats").json()["feeds"]["tmall"]
    # One 30-minute window looks at a few weeks of orders at most, never at the whole feed.
    assert stats["rows_materialized"] == 200
    assert stats["timeline_rows"] < 400_000


_FINGERPRINT = """
import hashlib, json, numpy as np
from sync.simulator.config import SimulatorConfig
from sync.simulator.dataset import identity_frame
from sync.simulator.state import SimulatorState
from sync.simulator.taobao import _trades_page
state = SimulatorState.create(SimulatorConfig())
trades = _trades_page(state.feeds["tmall"], np.arange(500, 600), state.now, {}, False)
payload = identity_frame().to_csv(index=False) + json.dumps(trades, ensure_ascii=False, sort_keys=True)
print(hashlib.sha256(payload.encode()).hexdigest())
"""


def test_data_does_not_depend_on_the_process(tmp_path):
    """Nothing may hang on Python's per-process string hashing: two interpreters with different
    PYTHONHASHSEED produce byte-identical truth and trades."""
    root = str(Path(__file__).resolve().parents[3])
    prints = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": root}
        result = subprocess.run(
            [sys.executable, "-c", _FINGERPRINT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        )
        prints.add(result.stdout.strip())
    assert len(prints) == 1


def test_truth_follows_the_clock(start_sim):
    """More members than sales: sales after the initial now introduce new members, and the truth
    served at the advanced clock lists them, still matching the feeds."""
    config = SimulatorConfig(seed=5, people=300, orders=60, days=3, order_shares={"tmall": 0.5, "pos": 0.5})
    sim = start_sim(config)
    before = set(_check_truth(sim).record_id)
    sim.http.post("/_sim/advance", json={"minutes": 24 * 60})
    after = set(_check_truth(sim).record_id)
    assert before < after
    assert before == set(identity_frame(config=config).record_id)
