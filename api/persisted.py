"""Persisted queries: a client sends the sha256 of a document instead of the document.

Two uses. Automatic persisted queries (Apollo's protocol): a mini-program sends only the hash, and the
document once when the server does not know it yet, so its requests stay small. An allow-list: the
documents a release of the apps uses, shipped as a JSON file (`C360_API_PERSISTED_QUERIES`, hash ->
document), and with `C360_API_PERSISTED_ONLY=true` nothing else runs, so a stolen member token cannot be
used to explore the graph."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 1 << 20


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def load_store(path: Path | None) -> dict[str, str]:
    """The allow-list file, each entry checked: a hash that is not its document's names itself."""
    if path is None:
        return {}
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"C360_API_PERSISTED_QUERIES={path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"C360_API_PERSISTED_QUERIES={path}: expected an object of sha256 -> document")
    for key, document in data.items():
        if not isinstance(document, str) or sha256(document) != key:
            raise ValueError(
                f"C360_API_PERSISTED_QUERIES={path}: entry {key!r} is not the sha256 of its document"
            )
    return dict(data)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body already read, then whatever the client sends next."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


def _error(message: str, code: str, status: int = 200) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status)


class PersistedQueries:
    def __init__(self, app: ASGIApp, store: dict[str, str], only: bool) -> None:
        self.app = app
        self.store = dict(store)
        self.only = only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                await _error("request body larger than 1 MiB", "BAD_REQUEST", 413)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            payload: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, dict):
            reply = self._resolve(payload)
            if reply is not None:
                await reply(scope, receive, send)
                return
            body = orjson.dumps(payload)
        elif self.only:
            await _error("only persisted queries are accepted", "PERSISTED_QUERY_REQUIRED", 400)(
                scope, receive, send
            )
            return
        await self.app(scope, replay(body, receive), send)

    def _resolve(self, payload: dict[str, Any]) -> JSONResponse | None:
        """Put the document in `payload`; or the error reply."""
        extensions = payload.get("extensions") or {}
        persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
        document = payload.get("query")
        if not isinstance(persisted, dict):
            if self.only:
                return _error("only persisted queries are accepted: send extensions.persistedQuery.sha256Hash",
                              "PERSISTED_QUERY_REQUIRED", 400)  # fmt: skip
            return None
        digest = persisted.get("sha256Hash")
        if not isinstance(digest, str):
            return _error("extensions.persistedQuery.sha256Hash must be a string", "BAD_REQUEST", 400)
        if isinstance(document, str) and document:
            if sha256(document) != digest:
                return _error("provided sha does not match query", "PERSISTED_QUERY_HASH_MISMATCH", 400)
            if digest not in self.store:
                if self.only:
                    return _error(
                        "this document is not on the allow-list", "PERSISTED_QUERY_NOT_ALLOWED", 400
                    )
                self.store[digest] = document  # automatic persisted query: registered for later requests
            return None
        known = self.store.get(digest)
        if known is None:
            # Apollo's clients retry with the document on exactly this message.
            return _error("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")
        payload["query"] = known
        return None
