"""The generators' own invariants: scalar and vector paths agree, time is monotone in the index."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from sync.simulator import CST, SimulatorConfig
from sync.simulator.formats import gmt8, iso, weibo_time
from sync.simulator.people import id_check_digit, mask_mobile, mask_name
from sync.simulator.seeding import hash_one, hashes, stream_key, uniform_one, uniforms
from sync.simulator.trading_hours import ONLINE_HOURS, STORE_HOURS, Rhythm


def test_scalar_and_vector_hashes_agree():
    key = stream_key(42, "orders:tmall")
    index = np.arange(0, 5000, 7)
    assert [hash_one(key, int(i), 3) for i in index] == hashes(key, index, 3).tolist()
    assert [uniform_one(key, int(i), 3) for i in index] == uniforms(key, index, 3).tolist()


@pytest.mark.parametrize("hours", [ONLINE_HOURS, STORE_HOURS])
@pytest.mark.parametrize("per_span", [50, 8000, 1_000_000])
def test_row_times_are_monotone_and_scalar_matches_vector(hours, per_span):
    rhythm = Rhythm(stream_key(42, "test"), SimulatorConfig().start, 80, per_span, hours)
    index = np.arange(min(per_span * 2, 100_000))
    times = rhythm.times(index)
    assert (np.diff(times) >= 0).all()
    sample = np.random.default_rng(5).integers(0, per_span * 3, 2000)
    assert [rhythm.time(int(i)) for i in sample] == rhythm.times(sample).tolist()
    moment = int(times[len(times) // 2])
    first = rhythm.first_at_or_after(moment)
    assert rhythm.time(first) >= moment and (first == 0 or rhythm.time(first - 1) < moment)


def test_store_sales_fall_in_opening_hours():
    rhythm = Rhythm(stream_key(1, "pos"), SimulatorConfig().start, 80, 5000, STORE_HOURS)
    hours = {datetime.fromtimestamp(int(t), CST).hour for t in rhythm.times(np.arange(5000))}
    assert min(hours) >= 10 and max(hours) < 22


def test_wire_formats():
    moment = datetime(2026, 11, 11, 20, 5, 9, tzinfo=CST)
    ts = int(moment.timestamp())
    assert gmt8(ts) == "2026-11-11 20:05:09"
    assert iso(ts) == "2026-11-11T20:05:09+08:00"
    assert weibo_time(ts) == "Wed Nov 11 20:05:09 +0800 2026"
    assert datetime.strptime(weibo_time(ts), "%a %b %d %H:%M:%S %z %Y") == moment


def test_identity_helpers():
    assert id_check_digit("11010519491231002") == "X"  # the textbook example number
    assert mask_mobile("13812345678") == "138****5678"
    assert mask_name("张伟") == "张*" and mask_name("欧阳娜娜") == "欧***"


@pytest.mark.parametrize(
    "bad",
    [
        {"days": 0},
        {"people": -1},
        {"malformed_rate": 2.0},
        {"order_shares": {"taobao": 1.0}},
        {"start": datetime(2026, 9, 1)},
    ],
)
def test_config_refuses_nonsense_with_a_message_naming_the_field(bad):
    with pytest.raises(ValueError, match="|".join(bad)):
        SimulatorConfig(**bad)
