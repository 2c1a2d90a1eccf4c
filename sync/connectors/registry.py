"""Channel code -> connector class."""

from __future__ import annotations

from sync.config import SyncSettings
from sync.connectors.app import AppConnector
from sync.connectors.base import Connector
from sync.connectors.catalog import CatalogConnector
from sync.connectors.jd import JdConnector
from sync.connectors.pos import PosConnector
from sync.connectors.taobao import TaobaoConnector
from sync.connectors.wechat import WeChatConnector
from sync.connectors.weibo import WeiboConnector

CONNECTORS: dict[str, type[Connector]] = {
    "tmall": TaobaoConnector,
    "jd": JdConnector,
    "app": AppConnector,
    "wechat": WeChatConnector,
    "weibo": WeiboConnector,
    "pos": PosConnector,
    "catalog": CatalogConnector,
}


def make_connector(code: str, settings: SyncSettings) -> Connector:
    """A connector for channel `code`; the message names the known codes when it is unknown."""
    try:
        cls = CONNECTORS[code]
    except KeyError:
        raise ValueError(f"unknown channel {code!r}; expected one of {', '.join(CONNECTORS)}") from None
    return cls(settings)
