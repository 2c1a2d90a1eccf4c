"""WeChat (token, followers, batch info, pushed XML) and Weibo (comments, mentions)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime

from sync.simulator.dataset import identity_frame


def test_wechat_token_is_required_and_checked(sim):
    bad = sim.http.get(
        "/wechat/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": sim.config.wechat_appid, "secret": "x"},
    )
    assert bad.json()["errcode"] == 40001
    reply = sim.http.get("/wechat/cgi-bin/user/get", params={"access_token": "stale"})
    assert reply.json()["errcode"] == 40001


def test_followers_and_batch_info_match_the_truth(sim):
    token = sim.wechat_token()
    body = sim.http.get("/wechat/cgi-bin/user/get", params={"access_token": token}).json()
    openids = body["data"]["openid"]
    assert body["count"] == len(openids) == body["total"]
    assert body["next_openid"] == openids[-1]
    after = sim.http.get(
        "/wechat/cgi-bin/user/get", params={"access_token": token, "next_openid": openids[-1]}
    ).json()
    assert after["count"] == 0 and after["next_openid"] == ""
    truth = identity_frame().set_index("record_id")
    for start in range(0, 300, 100):
        chunk = openids[start : start + 100]
        reply = sim.http.post(
            "/wechat/cgi-bin/user/info/batchget",
            params={"access_token": token},
            json={"user_list": [{"openid": o, "lang": "zh_CN"} for o in chunk]},
        ).json()
        for info in reply["user_info_list"]:
            assert info["subscribe"] == 1 and "nickname" not in info
            expected = truth.loc[f"wechat:{info['openid']}", "wechat_unionid"]
            assert info.get("unionid") == (None if expected is None or str(expected) == "<NA>" else expected)
    too_many = sim.http.post(
        "/wechat/cgi-bin/user/info/batchget",
        params={"access_token": token},
        json={"user_list": [{"openid": o} for o in openids[:101]]},
    )
    assert too_many.json()["errcode"] == 40032


def test_pushes_are_wechat_xml_in_sequence(sim):
    items: list[dict] = []
    after = 0
    while True:
        body = sim.http.get("/wechat/_sim/pushes", params={"after": after, "limit": 500}).json()
        if not body["items"]:
            break
        items += body["items"]
        after = body["next"]
    assert [i["seq"] for i in items] == list(range(1, len(items) + 1))
    kinds = set()
    last_time = 0
    for item in items:
        root = ET.fromstring(item["xml"])
        created = int(root.findtext("CreateTime") or 0)
        assert created >= last_time
        last_time = created
        if root.findtext("MsgType") == "text":
            assert root.findtext("MsgId") and root.findtext("Content")
            kinds.add("text")
        else:
            kinds.add(root.findtext("Event") or "")
    assert {"subscribe", "unsubscribe", "SCAN", "text"} <= kinds


def test_weibo_pages_walk_back_with_max_id(sim):
    first = sim.weibo("/weibo/2/comments/to_me.json", count=50).json()
    total = first["total_number"]
    comments = first["comments"]
    while len(comments) < total:
        page = sim.weibo("/weibo/2/comments/to_me.json", count=50, max_id=comments[-1]["id"] - 1).json()[
            "comments"
        ]
        assert page
        comments += page
    ids = [c["id"] for c in comments]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == total
    newest = ids[10]
    newer = sim.weibo("/weibo/2/comments/to_me.json", since_id=newest, count=200).json()["comments"]
    assert [c["id"] for c in newer] == ids[:10]
    for comment in comments[:50]:
        datetime.strptime(comment["created_at"], "%a %b %d %H:%M:%S %z %Y")
        assert comment["user"]["gender"] in ("m", "f") and " " in comment["user"]["location"]


def test_weibo_mentions_and_expired_token(sim):
    mentions = sim.weibo("/weibo/2/statuses/mentions.json", count=5).json()["statuses"]
    assert len(mentions) == 5 and all("@" in m["text"] for m in mentions)
    reply = sim.http.get("/weibo/2/statuses/mentions.json", params={"access_token": "old"})
    assert reply.json()["error_code"] == 21327


def test_a_new_wechat_token_keeps_only_the_previous_one_alive(start_sim):
    sim = start_sim()
    first, second, third = sim.wechat_token(), sim.wechat_token(), sim.wechat_token()
    ask = lambda token: sim.http.get("/wechat/cgi-bin/user/get", params={"access_token": token}).json()  # noqa: E731
    assert ask(first)["errcode"] == 40001
    assert "total" in ask(second) and "total" in ask(third)


def test_single_user_info_matches_the_batch(sim):
    token = sim.wechat_token()
    openids = sim.http.get("/wechat/cgi-bin/user/get", params={"access_token": token}).json()["data"][
        "openid"
    ][:3]
    batch = sim.http.post(
        "/wechat/cgi-bin/user/info/batchget",
        params={"access_token": token},
        json={"user_list": [{"openid": o} for o in openids]},
    ).json()["user_info_list"]
    single = [
        sim.http.get("/wechat/cgi-bin/user/info", params={"access_token": token, "openid": o}).json()
        for o in openids
    ]
    assert single == batch
    unknown = sim.http.get("/wechat/cgi-bin/user/info", params={"access_token": token, "openid": "o_nobody"})
    assert unknown.json()["errcode"] == 40003
