"""Errors as a client and an operator see them: a failure of ours reaches the client as `internal error`
with an id and no internals, and the log has the same id with the traceback; a client's own mistake is
answered plainly and is not logged as a server error."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from gql.transport.exceptions import TransportQueryError
from sqlalchemy.ext.asyncio import create_async_engine

from infra.migrate import upgrade
from schema.relay import to_global_id
from tests.api.graphql_support import api_server
from tests.conftest import create_database, drop_database, server_url


async def test_internal_errors_are_masked_with_an_id_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    url = await create_database(server_url(), "c360_errors")
    engine = create_async_engine(url)
    try:
        await asyncio.to_thread(upgrade, url, "heads")
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "insert into golden_customer (id, status, name, phone) values (7, 'active', '张伟', '+8613812345678')"
            )
            # An outage of one table: what a broken deploy or a bad migration looks like from the API.
            await conn.exec_driver_sql("alter table customer_metrics rename to customer_metrics_gone")
        with api_server(url) as api:
            caplog.set_level(logging.DEBUG, logger="c360.api")
            with pytest.raises(TransportQueryError) as failed:
                await api.query(
                    "query ($id: ID!) { customer(id: $id) { metrics { orderCount } } }",
                    id=to_global_id("Customer", 7),
                )
            [error] = failed.value.errors or []
            assert error["extensions"]["code"] == "INTERNAL"
            eid = error["extensions"]["errorId"]
            assert re.fullmatch(r"[0-9a-f]{12}", eid)
            assert error["message"] == f"internal error (id {eid}); it has been logged"
            # Nothing of the SQL, the table or the driver reaches the client.
            assert "customer_metrics" not in str(failed.value.errors)
            logged = [r for r in caplog.records if r.levelno == logging.ERROR and eid in r.getMessage()]
            assert len(logged) == 1 and logged[0].exc_info is not None
            assert "customer.metrics" in logged[0].getMessage()

            # A client's mistake: answered with what is wrong, and no server error in the log.
            caplog.clear()
            with pytest.raises(TransportQueryError) as mistake:
                await api.query("{ customer(id: 1) { shoeSize } }")
            assert "Cannot query field 'shoeSize'" in str(mistake.value.errors)
            with pytest.raises(TransportQueryError) as forbidden:
                await api.query("{ me { customerId } }", role="staff")
            assert forbidden.value.errors and forbidden.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        await engine.dispose()
        await drop_database(url)
