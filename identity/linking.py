"""Incremental linking of newly landed source identities to golden customers in PostgreSQL.

The same engine as the batch command, restricted to pairs that touch a new identity:
1. candidates: for every exact blocking pass, the existing identities sharing a key with a new one
   (one parameterized statement per pass; keys shared by more than `max_block_size` identities are
   skipped in SQL, as the batch path skips oversized blocks);
2. blocked values are masked with their population-wide counts; strong identifiers link by rule;
   the rest is compared and scored by a fixed Fellegi-Sunter model (the reference model unless one
   is given), so a result does not depend on which identities arrived together;
3. a constrained union-find starts from the existing customers (their identities pre-joined, their
   cannot-link facts and rejected reviews loaded) and applies links strongest first;
4. a cluster without a customer creates one; a cluster joining several customers merges them into
   the oldest (smallest id) with a merge event and evidence; review pairs go to identity_review;
   rows already landed for the new identities (orders, interactions, cases, consents) follow them;
   golden records of touched customers are recomputed.
One advisory lock serializes linking runs, so two syncs never create the same customer twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from identity.blocking import DEFAULT_PASSES, BlockingPass, blocking_keys, name_parts
from identity.cluster import apply_links
from identity.compare import FEATURES, RECEIVER_SOURCES, PreparedRecords, describe_levels
from identity.engine import (
    Edges,
    attach_by_full_name,
    deterministic_edges,
    mask_blocked,
    node_constraints,
    score_candidates,
)
from identity.merge import absorb_customers
from identity.model import FellegiSunterModel, reference_model
from identity.repository import (
    create_golden_customers,
    identities_to_standard,
    load_identities,
    refresh_golden_records,
    write_link_audit,
)
from identity.rules import DEFAULT_RULES, IdentityRules

LINKING_LOCK_KEY = 0x1D_3E_7171  # pg_advisory_xact_lock key of the linking run

# SQL expression of each blocking key column, equal to `blocking_keys` on the standardized values.
KEY_SQL: dict[str, str] = {
    "wechat_unionid": "si.wechat_unionid",
    "id_number": "si.id_number",
    "member_no": "si.member_no",
    "phone": "si.phone",
    "email": "si.email",
    "city": "si.city",
    "postcode": "si.postcode",
    "birth_date": "cast(si.birth_date as text)",
    "family_key": "nullif(split_part(si.name_pinyin, ' ', 1), '')",
    "given_key": "nullif(case when strpos(si.name_pinyin, ' ') > 0 then"
    " replace(substr(si.name_pinyin, strpos(si.name_pinyin, ' ') + 1), ' ', '') end, '')",
    "street_key": "nullif(split_part(si.address_detail, ' ', 1), '')",
    "phone_tail": "case when length(si.phone) >= 8 then right(si.phone, 8) end",
    "phone_masked_key": "coalesce(case when si.phone like '+86%' and length(si.phone) = 14"
    " then substr(si.phone, 4, 3) || right(si.phone, 4) end,"
    " case when si.phone_masked is not null then left(si.phone_masked, 3) || right(si.phone_masked, 4) end)",
    # Order-free name key: the stored "family given" in either order.
    "name_key": "si.name_pinyin",
}
FULL_NAME_PASS = BlockingPass("full_name", ("name_key",))
STRONG_COLUMNS = ("wechat_unionid", "id_number", "member_no", "phone", "email", "phone_masked")


@dataclass
class LinkReport:
    """What a linking run did. `customers_touched` feeds the CRM recomputation hook."""

    linked: int = 0  # new identities attached to an existing customer
    created: int = 0  # golden customers created
    queued_for_review: int = 0  # pairs written to identity_review
    merged: int = 0  # existing customers absorbed into another
    refused: int = 0  # links refused by a cannot-link constraint or a per-customer limit
    pairs_compared: int = 0
    customers_touched: set[int] = field(default_factory=set)
    merge_event_ids: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per step, for benchmarks and logs

    def lap(self, step: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[step] = round(self.seconds.get(step, 0.0) + now - started, 3)
        return now


def _name_variants(name_key: str) -> list[str]:
    tokens = name_key.split()
    if len(tokens) == 1:
        return [f" {tokens[0]}", f"{tokens[0]} "]
    if len(tokens) == 2:
        return [f"{tokens[0]} {tokens[1]}", f"{tokens[1]} {tokens[0]}"]
    return []


async def _candidate_ids(
    conn: AsyncConnection,
    keys: pd.DataFrame,
    passes: Sequence[BlockingPass],
    rules: IdentityRules,
    new_ids: list[int],
) -> set[int]:
    """Ids of linked identities sharing a blocking key with a new identity (blocks within size)."""
    found: set[int] = set()
    for blocking_pass in passes:
        cols = list(blocking_pass.columns)
        present = keys[cols].dropna()
        if present.empty:
            continue
        tuples = {tuple(r) for r in present.itertuples(index=False)}
        if "name_key" in cols:
            i = cols.index("name_key")
            tuples = {t[:i] + (v,) + t[i + 1 :] for t in tuples for v in _name_variants(str(t[i]))}
        if not tuples:
            continue
        arrays = list(zip(*tuples, strict=True))
        params: dict[str, Any] = {f"k{j}": [str(v) for v in arrays[j]] for j in range(len(cols))}
        unnest = ", ".join(f"cast(:k{j} as text[])" for j in range(len(cols)))
        names = ", ".join(f"c{j}" for j in range(len(cols)))
        exprs = [KEY_SQL[c] for c in cols]
        join = " and ".join(f"{e} = k.c{j}" for j, e in enumerate(exprs))
        # The block of a name key spans both orders, so count over the sorted pair, not the raw value.
        partition = ", ".join(
            "least(split_part(si.name_pinyin, ' ', 1), split_part(si.name_pinyin, ' ', 2)) || '|' ||"
            " greatest(split_part(si.name_pinyin, ' ', 1), split_part(si.name_pinyin, ' ', 2))"
            if c == "name_key"
            else e
            for c, e in zip(cols, exprs, strict=True)
        )
        sql = (
            f"select id from (select si.id, count(*) over (partition by {partition}) as n"  # noqa: S608 - fixed expressions
            f" from source_identity si join (select distinct * from unnest({unnest}) as k0({names})) k on {join}"
            " where si.customer_id is not null or si.id = any(:new_ids)) t where n <= :max_block"
        )
        rows = await conn.execute(
            sa.text(sql), {**params, "new_ids": new_ids, "max_block": rules.max_block_size}
        )
        found.update(int(r[0]) for r in rows)
    return found


async def _shared_counts(conn: AsyncConnection, std: pd.DataFrame) -> dict[str, pd.Series]:
    """How many identities in the whole table hold each strong value of the new identities."""
    shared: dict[str, pd.Series] = {}
    for column in STRONG_COLUMNS:
        values = sorted({str(v) for v in std[column].dropna()})
        if not values:
            continue
        rows = (
            await conn.execute(
                sa.text(
                    f"select {column}, count(*) from source_identity where {column} = any(:v) group by {column}"  # noqa: S608 - identifiers are fixed names, values are bound
                ),
                {"v": values},
            )
        ).all()
        shared[column] = pd.Series({r[0]: int(r[1]) for r in rows}, dtype="int64")
    return shared


async def _name_frequencies(
    conn: AsyncConnection, std: pd.DataFrame
) -> dict[str, tuple[dict[str, int], int]]:
    """Population counts of the surname and given-name keys in the frame, for term frequencies,
    and of the full name keys (how many identities hold each). Three scans: the counts of the
    wanted parts (grouping sets), the totals, and the full names (indexed equality)."""
    family, given = name_parts(std["name_pinyin"])
    wanted = {
        "family": sorted({str(v) for v in family.dropna()}),
        "given": sorted({str(v) for v in given.dropna()}),
    }
    counts: dict[str, dict[str, int]] = {"family": {}, "given": {}}
    if wanted["family"] or wanted["given"]:
        sql = (
            f"select family, given, count(*) from (select {KEY_SQL['family_key']} as family,"  # noqa: S608 - fixed expressions
            f" {KEY_SQL['given_key']} as given from source_identity si) t"
            " where family = any(:f) or given = any(:g) group by grouping sets ((family), (given))"
        )
        rows = await conn.execute(sa.text(sql), {"f": wanted["family"], "g": wanted["given"]})
        for fam, giv, n in rows:
            if fam is not None:
                counts["family"][str(fam)] = int(n)
            elif giv is not None:
                counts["given"][str(giv)] = int(n)
    totals_sql = (
        f"select count({KEY_SQL['family_key']}), count({KEY_SQL['given_key']}) from source_identity si"  # noqa: S608
    )
    family_total, given_total = (await conn.execute(sa.text(totals_sql))).one()
    full_names = sorted({str(v) for v in std["name_pinyin"][family.notna() & given.notna()]})
    holders: dict[str, int] = {}
    if full_names:
        rows = await conn.execute(
            sa.text(
                "select name_pinyin, count(*) from source_identity where name_pinyin = any(:n) group by name_pinyin"
            ),
            {"n": full_names},
        )
        holders = {str(name): int(n) for name, n in rows}
    return {
        "family": (counts["family"], int(family_total)),
        "given": (counts["given"], int(given_total)),
        "full_name": (holders, len(holders)),
        **await _contact_names(conn, std),
    }


async def _contact_names(conn: AsyncConnection, std: pd.DataFrame) -> dict[str, tuple[dict[str, int], int]]:
    """For each phone and each masked mobile of the frame, how many different full names the
    population's holders carry, and how many identities hold one at all; for each phone the same
    over the holders giving it as their own (`PreparedRecords`)."""
    family_sql, given_sql = KEY_SQL["family_key"], KEY_SQL["given_key"]
    # The order-free full name, as `compare.full_name_key` builds it.
    # People: different full names, or different surnames (钱女士 beside 魏兰).
    own = "coalesce(si.channel_code, '') <> all(:r)"

    def distinct_names(where: str = "true") -> str:
        return (
            f"greatest(count(distinct case when {family_sql} is not null and {given_sql} is not null"
            f" then least({family_sql}, {given_sql}) || ' ' || greatest({family_sql}, {given_sql}) end)"
            f" filter (where {where}), count(distinct {family_sql}) filter (where {where}))"
        )

    mask_sql = KEY_SQL["phone_masked_key"]
    phones = sorted({str(v) for v in std["phone"].dropna()})
    from_phones = {f"{p[3:6]}{p[-4:]}" for p in phones if p.startswith("+86") and len(p) == 14}
    masks = sorted(from_phones | {f"{m[:3]}{m[-4:]}" for m in std["phone_masked"].dropna().astype(str)})
    receivers = {"r": sorted(RECEIVER_SOURCES)}
    totals = (
        await conn.execute(
            sa.text(
                f"select count(si.phone), count({mask_sql}), count(si.phone) filter (where {own})"  # noqa: S608 - fixed expressions
                " from source_identity si"
            ),
            receivers,
        )
    ).one()
    # One scan per kind: the phone's holders and, beside them, those giving it as their own.
    rows = await conn.execute(
        sa.text(
            f"select si.phone, {distinct_names()}, {distinct_names(own)} from source_identity si"  # noqa: S608 - fixed expressions
            " where si.phone = any(:v) group by 1"
        ),
        {"v": phones, **receivers},
    )
    phone_names, owner_names = {}, {}
    for value, n, n_own in rows:
        phone_names[str(value)] = int(n)
        if n_own:
            owner_names[str(value)] = int(n_own)
    rows = await conn.execute(
        sa.text(
            f"select {mask_sql}, {distinct_names()} from source_identity si where {mask_sql} = any(:v) group by 1"  # noqa: S608 - fixed expressions
        ),
        {"v": masks},
    )
    # 1385678 -> 138****5678, as the frame writes it
    mask_names = {f"{str(k)[:3]}****{str(k)[3:]}": int(n) for k, n in rows}
    out: dict[str, tuple[dict[str, int], int]] = {
        "phone": (phone_names, int(totals[0])),
        "masked": (mask_names, int(totals[1])),
        "phone_owner": (owner_names, int(totals[2])),
    }
    return out


async def link_source_identities(
    engine: AsyncEngine,
    identity_ids: Sequence[int],
    *,
    actor: str = "sync",
    rules: IdentityRules = DEFAULT_RULES,
    model: FellegiSunterModel | None = None,
) -> LinkReport:
    """Link new or changed source identities (already standardized and landed) to golden customers.

    Runs in one transaction. Returns counts and `customers_touched`: every customer whose identities
    or golden record changed (created, linked to, or surviving a merge).
    """
    async with engine.begin() as conn:
        return await link_in_transaction(conn, identity_ids, actor=actor, rules=rules, model=model)


async def link_in_transaction(
    conn: AsyncConnection,
    identity_ids: Sequence[int],
    *,
    actor: str = "sync",
    rules: IdentityRules = DEFAULT_RULES,
    model: FellegiSunterModel | None = None,
    passes: Sequence[BlockingPass] = DEFAULT_PASSES,
    name_context: bool = True,
) -> LinkReport:
    """`link_source_identities` inside the caller's transaction."""
    report = LinkReport()
    new_ids = sorted({int(i) for i in identity_ids})
    if not new_ids:
        return report
    t = time.perf_counter()
    await conn.execute(sa.text("select pg_advisory_xact_lock(:k)"), {"k": LINKING_LOCK_KEY})
    if model is None:
        # Weights on the random-pair scale need the population size: every identity in the base.
        population = (await conn.execute(sa.text("select count(*) from source_identity"))).scalar_one()
        model = reference_model(int(population))
    new = await load_identities(conn, "si.id = any(:ids)", {"ids": new_ids})
    if new.empty:
        return report
    new_std = mask_blocked(identities_to_standard(new), rules)
    t = report.lap("load_new", t)
    # Every holder of a new identity's full name too: `attach_by_full_name` needs them all.
    candidates = await _candidate_ids(conn, blocking_keys(new_std), (*passes, FULL_NAME_PASS), rules, new_ids)
    t = report.lap("candidates", t)
    # Whole customers: their other identities carry the cannot-link facts and limits.
    customer_ids = (
        (
            await conn.execute(
                sa.text(
                    "select distinct customer_id from source_identity where id = any(:cand) and customer_id is not null"
                ),
                {"cand": sorted(candidates | set(new_ids))},  # a changed identity brings its own customer
            )
        )
        .scalars()
        .all()
    )
    # Two indexable arrays (a bitmap OR of the primary key and the customer index), not a subquery.
    frame = await load_identities(
        conn,
        "si.id = any(:ids) or si.customer_id = any(:cids)",
        {"ids": sorted(set(new_ids) | candidates), "cids": [int(c) for c in customer_ids]},
    )
    frame = frame[frame["customer_id"].notna() | frame["id"].isin(new_ids)].reset_index(drop=True)
    t = report.lap("load_candidate_rows", t)
    raw_std = identities_to_standard(frame)
    shared = await _shared_counts(conn, raw_std)
    t = report.lap("shared_counts", t)
    std = mask_blocked(raw_std, rules, shared)
    is_new = frame["id"].isin(new_ids).to_numpy()
    keys = blocking_keys(std)
    t = report.lap("load_candidates", t)
    rec = PreparedRecords.from_frame(std, population=await _name_frequencies(conn, std))
    t = report.lap("name_frequencies", t)

    det = deterministic_edges(std, rules, restrict=is_new)
    scoring = score_candidates(
        rec, keys, model, rules, passes=tuple(passes), sorted_neighbourhood=False, restrict=is_new
    )
    report.pairs_compared = scoring.pairs_compared
    t = report.lap("score", t)

    uf = node_constraints(std, rules)
    existing = frame["customer_id"].to_numpy()
    anchor: dict[int, int] = {}
    for pos in np.flatnonzero(~pd.isna(existing)):
        cid = int(existing[pos])
        if cid in anchor:
            uf.union(anchor[cid], int(pos), force=True)  # a customer is one cluster already
        else:
            anchor[cid] = int(pos)
    position = {int(v): i for i, v in enumerate(frame["id"])}
    rejected = (
        await conn.execute(
            sa.text(
                "select left_identity_id, right_identity_id from identity_review"
                " where status = 'rejected' and (left_identity_id = any(:ids) or right_identity_id = any(:ids))"
            ),
            {"ids": new_ids},
        )
    ).all()
    for a, b in rejected:
        if int(a) in position and int(b) in position:
            uf.forbid(position[int(a)], position[int(b)])

    edges = Edges.concat([det, scoring.links], len(FEATURES))
    accepted, held = apply_links(uf, edges.left, edges.right, edges.strength, trusted=edges.deterministic)
    review_edges = Edges.concat([scoring.review, edges.subset(held)], len(FEATURES))
    report.refused = int((~accepted & ~held).sum())
    # Besides new identities, a customer of one identity whose full name a new identity carries may
    # be attached now: in one batch run it would have seen the new identity's cluster too.
    attachable = is_new.copy()
    if name_context:
        new_names = set(std["name_pinyin"][is_new].dropna())
        attachable |= (
            std["name_pinyin"].isin(new_names).to_numpy() & ~pd.isna(frame["customer_id"]).to_numpy()
        )
        attach_by_full_name(
            std,
            uf,
            restrict=attachable,
            population_holders=rec.full_name_holders,
            max_population_holders=rules.max_block_size,
            rec=rec,
        )
    t = report.lap("cluster", t)
    labels = uf.labels()

    # The strongest accepted edge of each node is its evidence.
    best: dict[int, int] = {}
    for k in np.flatnonzero(accepted)[np.argsort(-edges.strength[accepted], kind="stable")]:
        for node in (int(edges.left[k]), int(edges.right[k])):
            best.setdefault(node, int(k))

    def evidence(node: int) -> dict[str, Any]:
        k = best.get(node)
        if k is None:
            return {"rule": "new_customer", "score": None, "features": {}}
        rule = str(edges.rule[k])
        score = None if rule.startswith("rule:") else round(float(edges.strength[k]), 6)
        other = int(edges.right[k]) if int(edges.left[k]) == node else int(edges.left[k])
        features = describe_levels(edges.levels[k]) if score is not None else {rule[5:]: "exact"}
        return {
            "rule": rule,
            "score": score,
            "features": features,
            "matched_identity_id": int(frame["id"].iat[other]),
        }

    clusters: dict[int, list[int]] = {}
    for node in range(len(frame)):
        clusters.setdefault(int(labels[node]), []).append(node)
    assignment: dict[int, int] = {}  # node -> customer id
    creating: list[list[int]] = []
    for members in clusters.values():
        customers = sorted({int(existing[m]) for m in members if not pd.isna(existing[m])})
        if not any(is_new[m] for m in members) and len(customers) < 2:
            continue
        if not customers:
            creating.append(members)
            continue
        survivor = customers[0]  # the oldest customer id wins
        if len(customers) > 1:
            crossing = [evidence(m) for m in members if is_new[m]] or [
                {"rule": "name_context", "score": None, "features": {"full_name": "exact"}}
            ]
            event_id = await absorb_customers(
                conn,
                survivor,
                customers[1:],
                actor=actor,
                reason="linked by a new source identity",
                evidence={"rule": "incremental_link", "links": crossing[:20]},
                refresh=False,
            )
            report.merged += len(customers) - 1
            report.merge_event_ids.append(event_id)
        report.customers_touched.add(survivor)
        for m in members:
            assignment[m] = survivor
    t = report.lap("merge", t)
    creating.sort(key=lambda ms: min(int(frame["id"].iat[m]) for m in ms))
    created = await create_golden_customers(conn, len(creating))
    for customer_id, members in zip(created, creating, strict=True):
        report.customers_touched.add(customer_id)
        for m in members:
            assignment[m] = customer_id
    report.created = len(created)

    moves = [
        (m, c) for m, c in assignment.items() if is_new[m] and (pd.isna(existing[m]) or int(existing[m]) != c)
    ]
    report.linked = sum(1 for m, c in moves if c not in created)
    if moves:
        evid = {m: evidence(m) for m, _ in moves}
        ids = [int(frame["id"].iat[m]) for m, _ in moves]
        cids = [c for _, c in moves]
        await conn.execute(
            sa.text(
                "update source_identity si set customer_id = m.cid, link_score = m.score, link_rule = m.rule,"
                " linked_at = now() from unnest(cast(:ids as bigint[]), cast(:cids as bigint[]),"
                " cast(:scores as float8[]), cast(:rules as text[])) as m(id, cid, score, rule) where si.id = m.id"
            ),
            {
                "ids": ids,
                "cids": cids,
                "scores": [evid[m]["score"] for m, _ in moves],
                "rules": [evid[m]["rule"][:64] for m, _ in moves],
            },
        )
        for table in ("orders", "interaction", "service_case", "consent"):
            await conn.execute(
                sa.text(
                    f"update {table} t set customer_id = m.cid from unnest(cast(:ids as bigint[]), cast(:cids as bigint[]))"  # noqa: S608
                    " as m(id, cid) where t.source_identity_id = m.id and t.customer_id is distinct from m.cid"
                ),
                {"ids": ids, "cids": cids},
            )
        await write_link_audit(
            conn,
            [
                {
                    "source_identity_id": int(frame["id"].iat[m]),
                    "from_customer_id": None if pd.isna(existing[m]) else int(existing[m]),
                    "to_customer_id": c,
                    "score": evid[m]["score"],
                    "rule": evid[m]["rule"][:64],
                    "features": {
                        **evid[m]["features"],
                        **(
                            {"matched_identity_id": evid[m]["matched_identity_id"]}
                            if "matched_identity_id" in evid[m]
                            else {}
                        ),
                    },
                }
                for m, c in moves
            ],
        )

    t = report.lap("write_links", t)
    review = review_edges
    if len(review.left):
        differ = labels[review.left] != labels[review.right]
        a = frame["id"].to_numpy()[review.left[differ]]
        b = frame["id"].to_numpy()[review.right[differ]]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        features = [json.dumps(describe_levels(lv)) for lv in review.levels[differ]]
        if len(lo):
            inserted = await conn.execute(
                sa.text(
                    "insert into identity_review (left_identity_id, right_identity_id, score, features, status)"
                    " select l, r, s, f, 'pending' from unnest(cast(:l as bigint[]), cast(:r as bigint[]),"
                    " cast(:s as float8[]), cast(:f as jsonb[])) as t(l, r, s, f)"
                    " on conflict (left_identity_id, right_identity_id) do nothing returning id"
                ),
                {"l": lo.tolist(), "r": hi.tolist(), "s": review.strength[differ].tolist(), "f": features},
            )
            report.queued_for_review = len(inserted.all())
    t = report.lap("write_reviews", t)
    await refresh_golden_records(conn, report.customers_touched)
    report.lap("golden_records", t)
    return report


async def resolve_review(
    engine: AsyncEngine, review_id: int, *, accept: bool, actor: str
) -> LinkReport | None:
    """A person's decision on a review pair. Accepting merges the two customers (oldest id wins);
    rejecting records a cannot-link that future linking runs respect."""
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "update identity_review set status = :s, decided_by = :a, decided_at = now()"
                    " where id = :id and status = 'pending' returning left_identity_id, right_identity_id, score, features"
                ),
                {"s": "accepted" if accept else "rejected", "a": actor, "id": review_id},
            )
        ).first()
        if row is None:
            raise ValueError(f"review {review_id} does not exist or is already decided")
        if not accept:
            return None
        customers = (
            (
                await conn.execute(
                    sa.text("select distinct customer_id from source_identity where id = any(:ids)"),
                    {"ids": [row[0], row[1]]},
                )
            )
            .scalars()
            .all()
        )
        ids = sorted(int(c) for c in customers if c is not None)
        report = LinkReport(customers_touched=set(ids[:1]))
        if len(ids) > 1:
            event_id = await absorb_customers(
                conn,
                ids[0],
                ids[1:],
                actor=actor,
                reason=f"review {review_id} accepted",
                evidence={"rule": "review_accepted", "score": float(row[2]), "features": row[3]},
            )
            report.merged, report.merge_event_ids = len(ids) - 1, [event_id]
        return report
