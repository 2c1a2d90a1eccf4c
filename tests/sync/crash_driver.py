"""A sync process for the crash test to kill: lands the given channels one after the other, then links, as
`sync_all` does, printing a line after every landed batch and before linking so the test can choose its kill
point by what has landed. Run as `python -m tests.sync.crash_driver DATABASE_URL SETTINGS_JSON CHANNEL...`."""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from sync.config import SyncSettings
from sync.connectors.registry import make_connector
from sync.identities import link_identities
from sync.runner import run_connector


async def main(url: str, settings_json: str, channels: list[str]) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    settings = SyncSettings.model_validate_json(settings_json)
    touched: set[int] = set()
    for channel in channels:
        connector = make_connector(channel, settings)
        try:
            result = await run_connector(
                engine,
                connector,
                progress=lambda key, stats: print(f"landed {key} {stats.orders}", flush=True),
            )
        finally:
            await connector.aclose()
        touched |= result["_total"].identity_ids
    print("linking", flush=True)
    await link_identities(engine, touched)
    print("done", flush=True)
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
