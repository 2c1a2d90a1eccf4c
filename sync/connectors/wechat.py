"""WeChat official account: followers (user/get + user/info/batchget) and pushed events and messages.

The access token expires and a new one invalidates the old: on 40001/40014/42001 it is refreshed and
the call retried once. Pushes (subscribe/unsubscribe events, text messages) are XML; the simulator
queues them at /wechat/_sim/pushes as a pull stand-in for the POST WeChat makes to our endpoint.
Events are deduplicated on FromUserName+CreateTime and messages on MsgId, as WeChat advises.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sync.canonical import (
    GMT8,
    Batch,
    ConsentRecord,
    InteractionRecord,
    PersonIdentity,
    QuarantinedRow,
    WatermarkAdvance,
)
from sync.connectors.base import Connector, PermanentError, TokenExpiredError, TransientError
from sync.validation import key_of, validate_rows

TOKEN_ERRORS = {40001, 40014, 42001}
QUOTA_ERRORS = {45009, 45011}


class InvalidOpenidError(PermanentError):
    """40003: e.g. a stored next_openid whose follower has since unfollowed."""


def check_wechat(body: Any) -> None:
    """errcode -1 (busy) and quota codes retry; token codes refresh; the rest are caller faults."""
    if not isinstance(body, dict):
        return
    code = body.get("errcode")
    if code in (None, 0):
        return
    text = f"WeChat errcode {code}: {body.get('errmsg', '')}"
    if code in TOKEN_ERRORS:
        raise TokenExpiredError(text)
    if code == -1 or code in QUOTA_ERRORS:
        raise TransientError(text)
    if code == 40003:
        raise InvalidOpenidError(text)
    raise PermanentError(text)


def _epoch(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value), UTC).astimezone(GMT8)


class WeChatUser(BaseModel):
    """One entry of user/info/batchget's `user_info_list`."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    subscribe: int
    openid: str = Field(min_length=1, max_length=64)
    unionid: str | None = Field(None, max_length=64)
    nickname: str | None = None
    subscribe_time: int | None = None
    remark: str | None = None
    subscribe_scene: str | None = None
    tagid_list: list[int] = Field(default_factory=list)


class WeChatPush(BaseModel):
    """A pushed XML message, as a dict of its child elements."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    ToUserName: str
    FromUserName: str = Field(min_length=1, max_length=64)
    CreateTime: int
    MsgType: str
    Event: str | None = None
    EventKey: str | None = None
    Content: str | None = None
    MsgId: str | None = None
    UnionId: str | None = None


def parse_push_xml(xml: str) -> dict[str, Any]:
    """`<xml><FromUserName><![CDATA[o..]]></FromUserName>...</xml>` -> {"FromUserName": "o..", ...}."""
    root = ET.fromstring(xml)
    return {child.tag: (child.text or "") for child in root}


def normalize_users(rows: list[Any], channel: str = "wechat") -> Batch:
    valid, bad = validate_rows(
        WeChatUser, rows, channel=channel, entity="customer", external_id=key_of("openid")
    )
    batch = Batch(quarantined=bad)
    for u, raw in valid:
        subscribed_at = _epoch(u.subscribe_time) if u.subscribe_time else None
        batch.identities.append(
            PersonIdentity(
                channel=channel,
                external_id=u.openid,
                source_updated_at=subscribed_at,
                attributes={"wechat_openid": u.openid, "wechat_unionid": u.unionid, "nickname": u.nickname},
                raw=raw,
            )
        )
        if u.subscribe == 1 and subscribed_at is not None:
            batch.consents.append(
                ConsentRecord(channel, u.openid, "marketing_wechat", "granted", subscribed_at)
            )
    return batch


def normalize_pushes(rows: list[Any], channel: str = "wechat") -> Batch:
    """Pushes (already parsed from XML) to follow/unfollow/message interactions and consent changes."""
    valid, bad = validate_rows(
        WeChatPush, rows, channel=channel, entity="interaction", external_id=key_of("MsgId", "FromUserName")
    )
    batch = Batch(quarantined=bad)
    for p, raw in valid:
        at = _epoch(p.CreateTime)
        if p.MsgType == "event":
            event = (p.Event or "").lower()
            kind = {"subscribe": "follow", "unsubscribe": "unfollow", "scan": "scan"}.get(
                event, event or "event"
            )
            external_id = f"{p.FromUserName}:{p.CreateTime}"
            if event in ("subscribe", "unsubscribe"):
                status = "granted" if event == "subscribe" else "withdrawn"
                batch.consents.append(ConsentRecord(channel, p.FromUserName, "marketing_wechat", status, at))
            summary = p.EventKey or None
        else:
            kind = "message"
            external_id = f"msg:{p.MsgId}" if p.MsgId else f"{p.FromUserName}:{p.CreateTime}:{p.MsgType}"
            summary = p.Content
        # A pushed openid may not have been listed yet: land a stub identity, never overwrite a full one.
        batch.identities.append(
            PersonIdentity(
                channel=channel,
                external_id=p.FromUserName,
                source_updated_at=None,
                attributes={"wechat_openid": p.FromUserName, "wechat_unionid": p.UnionId},
                raw={"FromUserName": p.FromUserName},
                stub=True,
            )
        )
        batch.interactions.append(
            InteractionRecord(channel, external_id, p.FromUserName, kind, at, summary, raw)
        )
    return batch


class WeChatConnector(Connector):
    """Followers and pushes of the official account."""

    channel = "wechat"
    streams = ("followers", "pushes")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._token: str | None = None
        self._token_lock = asyncio.Lock()
        self.client.refresh_token = self.refresh_token

    def normalizers(self) -> dict[str, Callable[[list[Any]], Batch]]:
        return {"customer": normalize_users, "interaction": normalize_pushes}

    async def refresh_token(self) -> None:
        async with self._token_lock:
            body = await self.client.request_json(
                "GET",
                "/wechat/cgi-bin/token",
                params={
                    "grant_type": "client_credential",
                    "appid": self.config.app_key,
                    "secret": self.config.app_secret,
                },
                check=check_wechat,
            )
            token = body.get("access_token")
            if not token:
                raise PermanentError(f"WeChat token reply has no access_token: {body}")
            self._token = str(token)

    async def token(self) -> str:
        if self._token is None:
            await self.refresh_token()
        assert self._token is not None
        return self._token

    def pull(
        self, stream: str, watermark: dict[str, Any] | None, since: datetime | None
    ) -> AsyncIterator[Batch]:
        if stream == "followers":
            return self._followers(watermark)
        if stream == "pushes":
            return self._pushes(watermark)
        raise ValueError(f"wechat has no stream {stream!r}")

    async def _followers(self, watermark: dict[str, Any] | None) -> AsyncIterator[Batch]:
        # user/get lists followers in follow order: resuming after the last openid read is incremental.
        next_openid = (watermark or {}).get("cursor") or ""
        key = self.watermark_key("followers")
        await self.token()
        sem = asyncio.Semaphore(self.settings.concurrency)
        while True:
            cursor = next_openid
            try:
                body = await self.client.request_json(
                    "GET",
                    "/wechat/cgi-bin/user/get",
                    params=lambda cursor=cursor: {"access_token": self._token, "next_openid": cursor},  # type: ignore[misc]
                    check=check_wechat,
                )
            except InvalidOpenidError:
                if not cursor:
                    raise
                # The follower we resumed after has unfollowed: list everyone again (landing is idempotent).
                next_openid = ""
                continue
            openids: list[str] = ((body.get("data") or {}).get("openid")) or []
            if not openids:
                return
            chunks = [openids[i : i + 100] for i in range(0, len(openids), 100)]
            for n, users in enumerate(await asyncio.gather(*(self._user_info(c, sem) for c in chunks))):
                batch = normalize_users(users)
                # The listed page tells how many followers it is about to describe: the progress total.
                batch.expected = len(openids) if n == 0 else 0
                yield batch
            next_openid = body.get("next_openid") or openids[-1]
            yield Batch(watermarks=[WatermarkAdvance(key, cursor=next_openid)])
            if next_openid == cursor:
                return

    async def _user_info(self, openids: list[str], sem: asyncio.Semaphore) -> list[Any]:
        """user/info/batchget for at most 100 openids."""
        async with sem:
            reply = await self.client.request_json(
                "POST",
                "/wechat/cgi-bin/user/info/batchget",
                params=lambda: {"access_token": self._token},
                json={"user_list": [{"openid": o, "lang": "zh_CN"} for o in openids]},
                check=check_wechat,
            )
        users: list[Any] = reply.get("user_info_list") or []
        return users

    async def _pushes(self, watermark: dict[str, Any] | None) -> AsyncIterator[Batch]:
        after = int((watermark or {}).get("cursor") or 0)
        key = self.watermark_key("pushes")
        limit = min(self.config.page_size, 1000)
        while True:
            body = await self.client.request_json(
                "GET", "/wechat/_sim/pushes", params={"after": after, "limit": limit}, check=check_wechat
            )
            items = body.get("items") or []
            if not items:
                return
            rows: list[Any] = []
            bad_xml: list[tuple[Any, Exception]] = []
            for item in items:
                try:
                    rows.append(parse_push_xml(item["xml"]))
                except (ET.ParseError, KeyError, TypeError) as error:
                    bad_xml.append((item, error))
            batch = normalize_pushes(rows)
            for item, exc in bad_xml:
                batch.quarantined.append(
                    QuarantinedRow(self.channel, "interaction", str(item.get("seq")), {"item": item},
                                   f"field `xml`: not well-formed XML ({exc})", [{"loc": ["xml"], "msg": str(exc)}])
                )  # fmt: skip
            after = max(int(i.get("seq") or 0) for i in items)
            batch.watermarks.append(WatermarkAdvance(key, cursor=str(after)))
            yield batch
            if body.get("next") in (None, "", after) and len(items) < limit:
                return
