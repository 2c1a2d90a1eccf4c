"""Simulator tests run it under real uvicorn on loopback and talk to it with httpx, like a connector."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sync.simulator import SimulatorConfig, create_simulator_app, jos_sign, top_sign
from tests.support import live_server

TOP_TIMESTAMP = "2026-11-20 10:00:00"


@dataclass
class Sim:
    """A running simulator and the config it was built from."""

    base: str
    config: SimulatorConfig
    http: httpx.Client

    def top(
        self, method: str, *, sign_method: str = "md5", secret: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """Call the TOP gateway with a correctly (or, with `secret`, wrongly) signed request."""
        form = {
            "method": method,
            "app_key": self.config.taobao_app_key,
            "session": self.config.taobao_session,
            "timestamp": TOP_TIMESTAMP,
            "format": "json",
            "v": "2.0",
            "sign_method": sign_method,
            **{k: str(v) for k, v in params.items()},
        }
        form = {k: v for k, v in form.items() if v != "None"}
        form["sign"] = top_sign(form, secret or self.config.taobao_app_secret, sign_method)
        response = self.http.post("/taobao/router/rest", data=form)
        response.raise_for_status()
        return dict(response.json())

    def jd(
        self, business: dict[str, Any], *, secret: str | None = None, token: str | None = None
    ) -> dict[str, Any]:
        form = {
            "method": "jingdong.pop.order.search",
            "app_key": self.config.jd_app_key,
            "access_token": token or self.config.jd_access_token,
            "timestamp": TOP_TIMESTAMP,
            "v": "2.0",
            "360buy_param_json": json.dumps(business, ensure_ascii=False),
        }
        form["sign"] = jos_sign(form, secret or self.config.jd_app_secret)
        response = self.http.post("/jd/routerjson", data=form)
        response.raise_for_status()
        return dict(response.json())

    def app_get(self, path: str, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.config.app_api_token}"}
        return self.http.get(path, params=params, headers=headers)

    def pos_get(self, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.config.pos_api_token}"}
        return self.http.get("/pos/v1/transactions", params=params, headers=headers)

    def wechat_token(self) -> str:
        params = {
            "grant_type": "client_credential",
            "appid": self.config.wechat_appid,
            "secret": self.config.wechat_secret,
        }
        return str(self.http.get("/wechat/cgi-bin/token", params=params).json()["access_token"])

    def weibo(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params={"access_token": self.config.weibo_access_token, **params})


@pytest.fixture
def start_sim() -> Iterator[Any]:
    """Factory: start a simulator for a config; every one started is stopped after the test."""
    stack: list[Any] = []

    def start(config: SimulatorConfig | None = None) -> Sim:
        config = config or SimulatorConfig()
        server = live_server(create_simulator_app(config))
        base = server.__enter__()
        client = httpx.Client(base_url=base, timeout=30)
        stack.append((server, client))
        return Sim(base, config, client)

    yield start
    for server, client in reversed(stack):
        client.close()
        server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    """A default simulator shared by the read-only tests of a module (never advanced or faulted)."""
    config = SimulatorConfig()
    with live_server(create_simulator_app(config)) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield Sim(base, config, client)
