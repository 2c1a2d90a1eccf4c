"""WeChat official account: access token, follower list, batch user info, and the push stand-in.

WeChat POSTs events and messages to the retailer as XML; a test cannot receive them, so
GET /wechat/_sim/pushes replays that XML as a pull feed ordered by a sequence number.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sync.simulator.control import malformed_requested
from sync.simulator.state import SimulatorState
from sync.simulator.streams import WechatPush

ACCOUNT_ID = "gh_7a3c9e5d1b2f"  # the official account's original id, ToUserName of every push
_MESSAGES = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40032: "invalid openid list size",
    42001: "access_token expired",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
}


def wechat_error(code: int) -> JSONResponse:
    """{errcode, errmsg} with HTTP 200, as WeChat answers."""
    return JSONResponse({"errcode": code, "errmsg": f"{_MESSAGES.get(code, 'error')} rid: sim"})


def platform_error(request: Request, code: str | None) -> Response:
    """Injected fault: system busy (-1) unless a code is given (40001, 45009, ...)."""
    try:
        return wechat_error(int(code) if code else -1)
    except ValueError:
        return wechat_error(-1)


async def token(request: Request, state: SimulatorState) -> Response:
    """GET /wechat/cgi-bin/token?grant_type=client_credential&appid=&secret=."""
    q = request.query_params
    if q.get("grant_type") != "client_credential":
        return wechat_error(40002)
    if q.get("appid") != state.config.wechat_appid:
        return wechat_error(40013)
    if q.get("secret") != state.config.wechat_secret:
        return wechat_error(40001)
    return JSONResponse({"access_token": state.issue_wechat_token(time.time()), "expires_in": 7200})


def _token_problem(request: Request, state: SimulatorState) -> Response | None:
    verdict = state.wechat_token_state(request.query_params.get("access_token", ""), time.time())
    if verdict == "expired":
        return wechat_error(42001)
    return None if verdict == "valid" else wechat_error(40001)


async def user_get(request: Request, state: SimulatorState) -> Response:
    """GET /wechat/cgi-bin/user/get?access_token=&next_openid=: current followers in follow order,
    up to 10000 per call; `next_openid` is the last one returned ("" when nothing was)."""
    problem = _token_problem(request, state)
    if problem:
        return problem
    _, followers = state.wechat_history()
    subscribed = sorted((f for f in followers.values() if f.subscribed), key=lambda f: f.first_seq)
    after = request.query_params.get("next_openid", "")
    start = 0
    if after:
        positions = {f.openid: n for n, f in enumerate(subscribed)}
        if after not in positions:
            return wechat_error(40003)
        start = positions[after] + 1
    chunk = [f.openid for f in subscribed[start : start + state.config.wechat_page_size]]
    body: dict[str, Any] = {"total": len(subscribed), "count": len(chunk)}
    if chunk:
        body["data"] = {"openid": chunk}
    body["next_openid"] = chunk[-1] if chunk else ""
    return JSONResponse(body)


def _user_info(state: SimulatorState, openid: str) -> dict[str, Any] | None:
    """One user's info as WeChat returns it; None for an openid the account never saw."""
    _, followers = state.wechat_history()
    identity = state.population.wechat_by_openid().get(openid)
    follower = followers.get(openid)
    if identity is None or follower is None:
        return None
    if not follower.subscribed:
        return {"subscribe": 0, "openid": openid}
    info: dict[str, Any] = {
        "subscribe": 1,
        "openid": openid,
        "language": "zh_CN",
        "subscribe_time": follower.subscribe_time,
        "remark": "",
        "groupid": 0,
        "tagid_list": [],
        "subscribe_scene": follower.scene,
        "qr_scene": 0,
        "qr_scene_str": "",
    }
    if identity.fields["wechat_unionid"]:
        info["unionid"] = identity.fields["wechat_unionid"]
    return info


async def user_info(request: Request, state: SimulatorState) -> Response:
    """GET /wechat/cgi-bin/user/info?access_token=&openid=&lang=zh_CN: one user."""
    problem = _token_problem(request, state)
    if problem:
        return problem
    info = _user_info(state, request.query_params.get("openid", ""))
    if info is None:
        return wechat_error(40003)
    if malformed_requested(request) and info.get("subscribe"):
        info["subscribe_time"] = "yesterday"
    return JSONResponse(info)


async def user_info_batchget(request: Request, state: SimulatorState) -> Response:
    """POST /wechat/cgi-bin/user/info/batchget?access_token= with {"user_list": [{"openid"}, ...]}
    (at most 100). No nickname or avatar: WeChat stopped returning them on 2021-12-27."""
    problem = _token_problem(request, state)
    if problem:
        return problem
    try:
        body = json.loads(await request.body() or b"{}")
        wanted = [str(item["openid"]) for item in body["user_list"]]
    except (ValueError, KeyError, TypeError):
        return wechat_error(40032)
    if not 1 <= len(wanted) <= 100:
        return wechat_error(40032)
    infos: list[dict[str, Any]] = []
    for openid in wanted:
        info = _user_info(state, openid)
        if info is None:
            return wechat_error(40003)
        if malformed_requested(request) and not infos and info.get("subscribe"):
            info["subscribe_time"] = "yesterday"
        infos.append(info)
    return JSONResponse({"user_info_list": infos})


def push_xml(push: WechatPush) -> str:
    """The XML WeChat would POST for this push."""
    head = (
        f"<xml><ToUserName><![CDATA[{ACCOUNT_ID}]]></ToUserName>"
        f"<FromUserName><![CDATA[{push.openid}]]></FromUserName>"
        f"<CreateTime>{push.at}</CreateTime>"
    )
    if push.kind == "text":
        return (
            f"{head}<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{push.content}]]></Content>"
            f"<MsgId>{push.msg_id}</MsgId></xml>"
        )
    key = (
        f"<EventKey><![CDATA[{push.event_key}]]></EventKey>"
        if push.event_key or push.kind != "unsubscribe"
        else ""
    )
    return f"{head}<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{push.kind}]]></Event>{key}</xml>"


async def pushes(request: Request, state: SimulatorState) -> Response:
    """GET /wechat/_sim/pushes?after=<seq>&limit=<=1000: pushes with seq > after, oldest first;
    `next` is the seq to pass as `after` next time."""
    try:
        after = int(request.query_params.get("after", "0"))
        limit = int(request.query_params.get("limit", "200"))
    except ValueError:
        return JSONResponse({"error": "after and limit must be integers"}, status_code=400)
    if not 1 <= limit <= 1000:
        return JSONResponse({"error": "limit must be between 1 and 1000"}, status_code=400)
    history, _ = state.wechat_history()
    chosen = history[max(0, after) : max(0, after) + limit]
    xmls = [push_xml(p) for p in chosen]
    if xmls and malformed_requested(request):
        xmls[0] = xmls[0].replace("</xml>", "").replace("<CreateTime>", "<CreateTime>x")
    items = [{"seq": p.seq, "xml": xml} for p, xml in zip(chosen, xmls, strict=True)]
    return JSONResponse({"items": items, "next": chosen[-1].seq if chosen else max(0, after)})
