"""Weibo: comments on the brand's posts (comments/to_me) and posts mentioning it (statuses/mentions).

Both are one stream of items with ids growing over time; each endpoint serves its kind newest first,
filtered by since_id (exclusive) and max_id (inclusive), paged by count/page.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sync.simulator.control import malformed_requested
from sync.simulator.formats import weibo_time
from sync.simulator.seeding import hash_one, row_random, uniforms
from sync.simulator.state import SimulatorState
from sync.simulator.vocabulary import SHOP_NAME, WEIBO_COMMENTS, WEIBO_MENTIONS

BRAND_UID = 3_712_345_678
ID_BASE = 4_950_000_000_000_000
_BRAND_POSTS = (
    "秋冬床品上新，纯棉四件套限时8折",
    "晒出你的家，赢取香薰礼盒",
    "新店开业：成都太古里店",
    "双十一预售开启",
)


def weibo_error(request: Request, code: int, message: str, status: int = 400) -> JSONResponse:
    """{error, error_code, request}, as Weibo answers errors."""
    return JSONResponse(
        {"error": message, "error_code": code, "request": request.url.path.removeprefix("/weibo")},
        status_code=status,
    )


def platform_error(request: Request, code: str | None) -> Response:
    """Injected fault: the per-user rate limit (10023) unless a code is given (21327, 10022, ...)."""
    if code == "21327":
        return weibo_error(request, 21327, "expired_token", 401)
    if code and code != "10023":
        return weibo_error(request, int(code), "rate limit" if code.startswith("100") else "error", 403)
    return weibo_error(request, 10023, "User requests out of rate limit!", 403)


def item_id(stream_key: int, i: int) -> int:
    """Weibo id of stream item i."""
    # Monotone in i: the spacing (1000) exceeds the jitter.
    return ID_BASE + i * 1000 + hash_one(stream_key, i, 3) % 1000


def _user(identity: Any) -> dict[str, Any]:
    f = identity.fields
    return {
        "id": int(identity.external_id),
        "idstr": identity.external_id,
        "screen_name": f["name"],
        "name": f["name"],
        "location": identity.extra["location"],
        "gender": f["gender"],
        "verified": False,
    }


async def _feed(request: Request, state: SimulatorState, kind: str) -> Response:
    token = request.query_params.get("access_token") or request.headers.get("authorization", "").removeprefix(
        "OAuth2 "
    )
    if token != state.config.weibo_access_token:
        return weibo_error(request, 21327, "expired_token", 401)
    q = request.query_params
    try:
        since_id = int(q.get("since_id", "0"))
        max_id = int(q.get("max_id", "0"))
        count = int(q.get("count", "50"))
        page = int(q.get("page", "1"))
    except ValueError:
        return weibo_error(request, 10017, "parameter (since_id, max_id, count, page)'s value invalid")
    if not 1 <= count <= 200 or page < 1:
        return weibo_error(request, 10017, "parameter count must be 1..200 and page >= 1")
    stream = state.stream("weibo")
    members = state.population.first_seen_order("weibo")
    visible = stream.visible_count(state.now) if members else 0
    index = np.arange(visible, dtype=np.int64)
    is_comment = uniforms(stream.key, index, 2) < 0.6
    index = index[is_comment if kind == "comment" else ~is_comment]
    ids = np.array([item_id(stream.key, int(i)) for i in index], dtype=np.int64)
    keep = ids > since_id
    if max_id:
        keep &= ids <= max_id
    index, ids = index[keep][::-1], ids[keep][::-1]
    total = len(index)
    chosen = index[(page - 1) * count : page * count]
    items: list[dict[str, Any]] = []
    for i in (int(x) for x in chosen):
        rng = row_random(stream.key, i + (1 << 40))
        identity = stream.subject(i, members)
        wid = item_id(stream.key, i)
        item: dict[str, Any] = {
            "created_at": weibo_time(stream.time(i)),
            "id": wid,
            "idstr": str(wid),
            "mid": str(wid),
            "text": rng.choice(WEIBO_COMMENTS)
            if kind == "comment"
            else rng.choice(WEIBO_MENTIONS).format(shop=SHOP_NAME),
            "source": '<a href="https://weibo.com/" rel="nofollow">微博 weibo.com</a>',
            "user": _user(identity),
        }
        if kind == "comment":
            post_id = ID_BASE - 1_000_000 + rng.randint(0, 3)
            item["status"] = {
                "id": post_id,
                "idstr": str(post_id),
                "text": _BRAND_POSTS[post_id % 4],
                "user": {"id": BRAND_UID, "idstr": str(BRAND_UID), "screen_name": SHOP_NAME},
            }
        else:
            item["reposts_count"] = rng.randint(0, 5)
            item["comments_count"] = rng.randint(0, 12)
        if malformed_requested(request) and not items:
            item["created_at"] = "刚刚"
        items.append(item)
    key = "comments" if kind == "comment" else "statuses"
    next_cursor = items[-1]["id"] - 1 if page * count < total and items else 0
    return JSONResponse(
        {
            key: items,
            "hasvisible": False,
            "previous_cursor": 0,
            "next_cursor": next_cursor,
            "total_number": total,
        }
    )


async def comments_to_me(request: Request, state: SimulatorState) -> Response:
    """GET /weibo/2/comments/to_me.json."""
    return await _feed(request, state, "comment")


async def mentions(request: Request, state: SimulatorState) -> Response:
    """GET /weibo/2/statuses/mentions.json."""
    return await _feed(request, state, "mention")
