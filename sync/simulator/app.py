"""The channel simulator as one Starlette app. URL layout (a contract the connectors code against):

/taobao/router/rest            POST  TOP gateway (trades.sold.get, trades.sold.increment.get, refunds.receive.get)
/jd/routerjson                 POST  JOS gateway (jingdong.pop.order.search)
/app/api/v1/{members,orders,events}  GET  own member system (Bearer app_api_token)
/wechat/cgi-bin/token, /wechat/cgi-bin/user/get, /wechat/cgi-bin/user/info (GET), .../user/info/batchget (POST)
/wechat/_sim/pushes            GET   pushed XML replayed as a pull feed
/weibo/2/comments/to_me.json, /weibo/2/statuses/mentions.json  GET
/pos/v1/transactions           GET   store POS (Bearer pos_api_token)
/catalog/v1/products           GET   home-goods catalogue
/_sim/{faults,advance,update_orders,clock,truth,stats}  simulator control
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync.simulator import control, jd, own_app, pos, taobao, wechat, weibo
from sync.simulator.catalogue import catalogue
from sync.simulator.config import SimulatorConfig
from sync.simulator.formats import yuan
from sync.simulator.state import SimulatorState


async def products(request: Request, state: SimulatorState) -> Response:
    """GET /catalog/v1/products?cursor=&limit<=500: the catalogue, in a stable order."""
    items = catalogue(state.config.seed)
    try:
        start = int(request.query_params.get("cursor") or 0)
        limit = int(request.query_params.get("limit", "500"))
    except ValueError:
        return own_app.api_error(400, "invalid_parameter", "cursor and limit must be integers", "cursor")
    if not 1 <= limit <= 500:
        return own_app.api_error(400, "invalid_parameter", "limit must be between 1 and 500", "limit")
    chosen = items[start : start + limit]
    data: list[dict[str, Any]] = [
        {
            "sku": p.sku,
            "title": p.title,
            "category": p.category,
            "price": yuan(p.price_fen),
            "price_fen": p.price_fen,
            "currency": "CNY",
            "taobao_num_iid": p.num_iid,
            "jd_sku_id": p.jd_sku_id,
        }
        for p in chosen
    ]
    more = start + limit < len(items)
    return JSONResponse({"data": data, "next_cursor": str(start + limit) if more else None})


async def index(request: Request) -> Response:
    """Where am I: the simulator's seed and where its documentation lives."""
    state: SimulatorState = request.app.state.simulator
    return JSONResponse(
        {
            "simulator": "customer360 channel simulator",
            "seed": state.config.seed,
            "docs": "sync/simulator/README.md",
        }
    )


def create_simulator_app(config: SimulatorConfig | None = None) -> Starlette:
    """Build the simulator for `config` (defaults: seed 42, 2000 people, 8000 orders). All data is a
    pure function of the config; the only state is the clock, armed faults, WeChat tokens and orders
    moved forward by /_sim/update_orders."""
    state = SimulatorState.create(config or SimulatorConfig())
    g = control.guarded
    routes = [
        Route("/", index),
        Route("/taobao/router/rest", g(taobao.router_rest, taobao.platform_error), methods=["GET", "POST"]),
        Route("/jd/routerjson", g(jd.routerjson, jd.platform_error), methods=["GET", "POST"]),
        Route("/app/api/v1/members", g(own_app.members, own_app.platform_error)),
        Route("/app/api/v1/orders", g(own_app.orders, own_app.platform_error)),
        Route("/app/api/v1/events", g(own_app.events, own_app.platform_error)),
        Route("/wechat/cgi-bin/token", g(wechat.token, wechat.platform_error)),
        Route("/wechat/cgi-bin/user/get", g(wechat.user_get, wechat.platform_error)),
        Route("/wechat/cgi-bin/user/info", g(wechat.user_info, wechat.platform_error)),
        Route(
            "/wechat/cgi-bin/user/info/batchget",
            g(wechat.user_info_batchget, wechat.platform_error),
            methods=["POST"],
        ),
        Route("/wechat/_sim/pushes", g(wechat.pushes, wechat.platform_error)),
        Route("/weibo/2/comments/to_me.json", g(weibo.comments_to_me, weibo.platform_error)),
        Route("/weibo/2/statuses/mentions.json", g(weibo.mentions, weibo.platform_error)),
        Route("/pos/v1/transactions", g(pos.transactions, own_app.platform_error)),
        Route("/catalog/v1/products", g(products, own_app.platform_error)),
        Route("/_sim/faults", control.post_faults, methods=["POST"]),
        Route("/_sim/faults", control.get_faults, methods=["GET"]),
        Route("/_sim/faults", control.delete_faults, methods=["DELETE"]),
        Route("/_sim/advance", control.post_advance, methods=["POST"]),
        Route("/_sim/update_orders", control.post_update_orders, methods=["POST"]),
        Route("/_sim/clock", control.get_clock),
        Route("/_sim/truth", control.get_truth),
        Route("/_sim/stats", control.get_stats),
    ]
    app = Starlette(routes=routes)
    app.state.simulator = state
    return app
