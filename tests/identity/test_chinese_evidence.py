"""Identity resolution on the evidence real Chinese omnichannel data carries (issue 16).

The quality figures run on `noisy_omnichannel_people`; each kind of noise also has a small test of
its own (a pair that must link, or a household that must stay apart); and the database path's
incremental linking must end with the clusters of one batch run on the same noisy records.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from identity.engine import resolve_frame
from identity.evaluate import pairwise_scores
from identity.linking import link_source_identities
from identity.model import reference_model
from identity.standardize import standardize_frame
from identity.synthetic import noisy_omnichannel_people
from tests.identity.factories import create_channels, customer_of, land_identities


async def test_incremental_linking_in_random_orders_and_batches_equals_one_batch(
    committed_db: AsyncEngine,
) -> None:
    records, _ = noisy_omnichannel_people(150, seed=11)
    rng = np.random.default_rng(5)
    std = standardize_frame(records.iloc[rng.permutation(len(records))].reset_index(drop=True))
    batch = resolve_frame(std, model=reference_model(len(std)), sorted_neighbourhood=False, standardized=True)
    async with committed_db.begin() as conn:
        await create_channels(conn)
        ids = await land_identities(conn, std, standardized=True)
    order = rng.permutation(len(ids))
    start = 0
    while start < len(order):  # sync runs of random sizes, in a random order
        size = int(rng.integers(1, 60))
        await link_source_identities(committed_db, [ids[i] for i in order[start : start + size]])
        start += size
    async with committed_db.connect() as conn:
        assigned = await customer_of(conn, ids)
    same = pairwise_scores([assigned[i] for i in ids], batch.customer_ids)
    assert batch.links > 0 and same.precision == 1.0 and same.recall == 1.0, same
