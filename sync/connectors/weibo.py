"""Weibo: comments to me and mentions, incremental by `since_id` (OAuth2 access_token).

Results are newest first; we page with a fixed `since_id` until a short page, and only then move the
cursor to the largest id read, so a crash mid-way re-reads (idempotently) instead of skipping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from sync.canonical import Batch, InteractionRecord, PersonIdentity, WatermarkAdvance
from sync.connectors.base import Connector, PermanentError, TransientError
from sync.validation import key_of, validate_rows

RATE_LIMIT_CODES = {10022, 10023, 10024}


def parse_weibo_time(value: Any) -> Any:
    """'Wed Jun 01 00:50:25 +0800 2011' -> an aware datetime."""
    if isinstance(value, str):
        return datetime.strptime(value, "%a %b %d %H:%M:%S %z %Y")
    return value


WeiboTime = Annotated[datetime, BeforeValidator(parse_weibo_time)]


def check_weibo(body: Any) -> None:
    if not isinstance(body, dict) or "error_code" not in body:
        return
    code = int(body.get("error_code") or 0)
    text = f"Weibo error {code}: {body.get('error', '')}"
    if code in RATE_LIMIT_CODES:
        raise TransientError(text)
    raise PermanentError(text)


class WeiboUser(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    id: str = Field(min_length=1, max_length=64)
    screen_name: str | None = None
    location: str | None = None
    gender: str | None = None


class WeiboItem(BaseModel):
    """A comment (comments/to_me) or a status mentioning us (statuses/mentions)."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    id: int
    idstr: str | None = None
    text: str | None = None
    created_at: WeiboTime
    user: WeiboUser


MUNICIPALITIES = {"北京", "上海", "天津", "重庆"}


def split_location(location: str | None) -> tuple[str | None, str | None, str | None]:
    """'广东 深圳' -> (广东, 深圳, None); '北京 朝阳区' -> (北京, 北京, 朝阳区): a municipality's second part
    is a district."""
    if not location:
        return None, None, None
    first, _, second = location.strip().partition(" ")
    second = second.strip()
    if first in MUNICIPALITIES:
        return first, first, second or None
    return first or None, second or None, None


def _normalize(rows: list[Any], kind: str, channel: str = "weibo") -> Batch:
    valid, bad = validate_rows(
        WeiboItem, rows, channel=channel, entity="interaction", external_id=key_of("idstr", "id")
    )
    batch = Batch(quarantined=bad)
    for item, raw in valid:
        u = item.user
        province, city, district = split_location(u.location)
        batch.identities.append(
            PersonIdentity(
                channel=channel,
                external_id=u.id,
                source_updated_at=item.created_at,
                # Many fans post under their real name: the screen name is offered as a name too.
                attributes={
                    "name": u.screen_name,
                    "nickname": u.screen_name,
                    "gender": u.gender,
                    "province": province,
                    "city": city,
                    "district": district,
                },
                raw=raw.get("user") if isinstance(raw.get("user"), dict) else {"id": u.id},
            )  # fmt: skip
        )
        batch.interactions.append(
            InteractionRecord(channel, f"{kind}:{item.id}", u.id, kind, item.created_at, item.text, raw)
        )
    return batch


def normalize_comments(rows: list[Any]) -> Batch:
    return _normalize(rows, "comment")


def normalize_mentions(rows: list[Any]) -> Batch:
    return _normalize(rows, "mention")


def normalize_interactions(rows: list[Any]) -> Batch:
    """Replay: a quarantined row is a comment when it carries the commented `status`."""
    comments = [r for r in rows if isinstance(r, dict) and "status" in r]
    mentions = [r for r in rows if not (isinstance(r, dict) and "status" in r)]
    batch = normalize_comments(comments)
    batch.extend(normalize_mentions(mentions))
    return batch


class WeiboConnector(Connector):
    channel = "weibo"
    streams = ("comments", "mentions")
    endpoints = {
        "comments": ("/weibo/2/comments/to_me.json", "comments", normalize_comments),
        "mentions": ("/weibo/2/statuses/mentions.json", "statuses", normalize_mentions),
    }

    def normalizers(self) -> dict[str, Callable[[list[Any]], Batch]]:
        return {"interaction": normalize_interactions}

    def pull(
        self, stream: str, watermark: dict[str, Any] | None, since: datetime | None
    ) -> AsyncIterator[Batch]:
        if stream not in self.endpoints:
            raise ValueError(f"weibo has no stream {stream!r}")
        return self._items(stream, watermark)

    async def _items(self, stream: str, watermark: dict[str, Any] | None) -> AsyncIterator[Batch]:
        path, key_name, normalize = self.endpoints[stream]
        since_id = int((watermark or {}).get("cursor") or 0)
        count = min(self.config.page_size, 200)
        newest = since_id
        page = 1
        while True:
            body = await self.client.request_json(
                "GET",
                path,
                params={
                    "access_token": self.config.token,
                    "since_id": since_id,
                    "count": count,
                    "page": page,
                },
                check=check_weibo,
            )
            rows = body.get(key_name) or []
            batch = normalize(rows)
            for r in rows:
                if isinstance(r, dict):
                    try:
                        newest = max(newest, int(r.get("id") or 0))
                    except (TypeError, ValueError):
                        pass
            done = len(rows) < count
            if done:
                batch.watermarks.append(WatermarkAdvance(self.watermark_key(stream), cursor=str(newest)))
            yield batch
            if done:
                return
            page += 1
