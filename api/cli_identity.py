"""`c360 identity ...`: batch resolution of a file, evaluation, and the review queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

identity_app = typer.Typer(help="Identity resolution: resolve files, evaluate quality.", no_args_is_help=True)
review_app = typer.Typer(
    help="Candidate pairs waiting for a person: list, accept, reject.", no_args_is_help=True
)
identity_app.add_typer(review_app, name="review")

console = Console(stderr=True)
T = TypeVar("T")

# Contract columns (docs/identity.md) plus the optional extras the standardizer understands.
INPUT_COLUMNS = (
    "record_id", "source", "name", "given_name", "family_name", "phone", "email", "birth_date", "gender",
    "id_number", "member_no", "wechat_unionid", "street_number", "address_1", "address_2", "address",
    "district", "city", "province", "postcode", "wechat_openid", "nickname", "phone_verified",
)  # fmt: skip
DATASETS = ("febrl2", "febrl4", "simulator")


def _fail(message: str) -> NoReturn:
    from api.cli import fail

    fail(message)


def read_input(path: Path) -> Any:
    """The input CSV as strings, known columns only; a clear error for a missing/duplicate record_id."""
    import pandas as pd

    if not path.exists():
        _fail(f"input file {path} does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        _fail(f"cannot read {path} as a UTF-8 CSV with a header: {exc}")
    frame.columns = [str(c).strip() for c in frame.columns]
    if "record_id" not in frame.columns:
        _fail(
            f"{path} has no 'record_id' column: add one with a unique id per row (columns found: {', '.join(frame.columns)})"
        )
    if frame["record_id"].isna().any():
        _fail(
            f"{path}: 'record_id' is empty on {int(frame['record_id'].isna().sum())} row(s); every row needs one"
        )
    duplicated = frame["record_id"][frame["record_id"].duplicated()]
    if len(duplicated):
        _fail(f"{path}: 'record_id' must be unique; repeated: {', '.join(duplicated.head(5))}")
    return frame[[c for c in INPUT_COLUMNS if c in frame.columns]]


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@identity_app.command("resolve")
def resolve(
    input_csv: Annotated[
        Path, typer.Argument(help="CSV with a header; record_id required, other contract columns optional.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write record_id,customer_id.")],
    previous: Annotated[
        Path | None, typer.Option(help="OUT.csv of an earlier run: its customer ids are kept (stable ids).")
    ] = None,
    review: Annotated[
        Path | None, typer.Option(help="Also write the pairs that need a person's review.")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Labelled pairs (left_record_id,right_record_id,is_match): score with a supervised model."
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(help="'em' fits Fellegi-Sunter weights on the file; 'reference' uses fixed weights."),
    ] = "em",
    quiet: Annotated[bool, typer.Option(help="No progress bar, no summary.")] = False,
) -> None:
    """Resolve a file of person records into customers, without touching the database.

    OUT has one row per input row: record_id,customer_id. Rows sharing a customer_id are one person.
    """
    from identity.engine import resolve_frame
    from identity.model import reference_model

    if model not in ("em", "reference"):
        _fail(f"--model {model!r}: choose 'em' or 'reference'")
    frame = read_input(input_csv)
    prior: dict[Any, int] = {}
    if previous is not None:
        import pandas as pd

        prev = pd.read_csv(previous, dtype=str) if previous.exists() else pd.DataFrame()
        if not {"record_id", "customer_id"} <= set(prev.columns):
            _fail(f"--previous {previous}: expected an OUT.csv of an earlier run with record_id,customer_id")
        prior = {
            r: int(c) for r, c in zip(prev["record_id"], prev["customer_id"], strict=True) if str(c).isdigit()
        }

    labelled = None
    if labels is not None:
        import pandas as pd

        labelled = pd.read_csv(labels, dtype=str) if labels.exists() else pd.DataFrame()
        if not {"left_record_id", "right_record_id", "is_match"} <= set(labelled.columns):
            _fail(f"--labels {labels}: expected columns left_record_id,right_record_id,is_match")

    bar = _progress()
    tasks = {
        "standardize": bar.add_task("standardizing records", total=len(frame)),
        "fit": bar.add_task("fitting weights (EM)", total=None, visible=model == "em"),
        "compare": bar.add_task("comparing candidate pairs", total=None),
        "cluster": bar.add_task("clustering", total=len(frame)),
    }

    def progress(stage: str, amount: int) -> None:
        bar.advance(tasks[stage], amount)

    with bar if not quiet else contextlib.nullcontext():
        try:
            result = resolve_frame(
                frame,
                model=None if model == "em" else reference_model(len(frame)),
                previous=prior or None,
                labelled_pairs=labelled,
                progress=None if quiet else progress,
            )
        except ValueError as exc:
            _fail(str(exc))
        for task in tasks.values():  # pair totals are known only at the end
            bar.update(task, total=bar.tasks[task].completed or 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    result.frame().to_csv(output, index=False)
    if review is not None:
        result.review.to_csv(review, index=False)
    if not quiet:
        console.print(
            f"{len(frame):,} records -> {len(set(result.customer_ids.tolist())):,} customers; "
            f"{result.pairs_compared:,} pairs compared, {result.links:,} links, "
            f"{result.review_pairs:,} pairs for review, {result.refused_links:,} links refused by constraints. "
            f"Wrote {output}"
        )


def evaluation(datasets: list[str], seed: int = 42, people: int = 2000) -> list[dict[str, Any]]:
    """Pairwise precision/recall/F1 of the batch engine on each data set (JSON-ready rows)."""
    import time

    from identity.engine import resolve_frame
    from identity.evaluate import febrl2_dataset, febrl4_dataset, pairwise_scores
    from identity.model import reference_model

    rows: list[dict[str, Any]] = []
    for name in datasets:
        if name == "febrl2":
            frame, truth = febrl2_dataset()
        elif name == "febrl4":
            frame, truth = febrl4_dataset()
        else:
            try:
                from sync.simulator.dataset import identity_frame
            except ImportError:
                rows.append(
                    {"dataset": name, "error": "the channel simulator (sync.simulator) is not installed"}
                )
                continue
            frame = identity_frame(seed=seed, people=people)
            truth = frame["true_person_id"].to_numpy()
            frame = frame.drop(columns=["true_person_id"])
        # The simulator's marketplace records are too sparse for EM to find its footing: fixed weights.
        models = ("em", "reference") if name == "simulator" else ("em",)
        for model in models:
            start = time.perf_counter()
            result = resolve_frame(frame, model=None if model == "em" else reference_model(len(frame)))
            scores = pairwise_scores(result.customer_ids, truth)
            rows.append(
                {
                    "dataset": name,
                    "model": model,
                    "records": len(frame),
                    **{k: round(v, 4) if isinstance(v, float) else v for k, v in scores.as_dict().items()},
                    "review_pairs": result.review_pairs,
                    "seconds": round(time.perf_counter() - start, 2),
                }
            )
    return rows


@identity_app.command("evaluate")
def evaluate(
    dataset: Annotated[
        list[str] | None, typer.Option(help="febrl2 (dedup), febrl4 (link, resolved as one file), simulator.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Simulator population seed.")] = 42,
    people: Annotated[int, typer.Option(help="Simulator population size.")] = 2000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Pairwise precision, recall and F1 on FEBRL2, FEBRL4 and the channel simulator's ground truth."""
    chosen = dataset or list(DATASETS)
    unknown = [d for d in chosen if d not in DATASETS]
    if unknown:
        _fail(f"--dataset {', '.join(unknown)}: choose from {', '.join(DATASETS)}")
    rows = evaluation(chosen, seed, people)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="Identity resolution quality (pairwise)")
    for column in ("dataset", "model", "records", "precision", "recall", "f1", "review_pairs", "seconds"):
        table.add_column(column, justify="left" if column in ("dataset", "model") else "right")
    for row in rows:
        table.add_row(
            *(
                str(row.get(c, row.get("error", "")))
                for c in (
                    "dataset",
                    "model",
                    "records",
                    "precision",
                    "recall",
                    "f1",
                    "review_pairs",
                    "seconds",
                )
            )
        )
    Console().print(table)


# --------------------------------------------------------------------------- database commands


def with_engine(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(engine)` against the configured database (checked first, one clear error if down)."""
    from api.cli import database_url_checked, load_settings
    from infra.db import make_engine

    url = database_url_checked(load_settings())

    async def run() -> T:
        engine = make_engine(url, 2)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@identity_app.command("link")
def link(
    identity_ids: Annotated[
        list[int] | None, typer.Argument(help="Source identity ids; default: every unlinked one.")
    ] = None,
    actor: Annotated[str, typer.Option(help="Who is linking, for the audit trail.")] = "cli",
) -> None:
    """Link source identities to golden customers (the incremental path sync runs)."""
    import sqlalchemy as sa

    from identity.linking import link_source_identities

    async def work(engine: Any) -> Any:
        ids = identity_ids
        if not ids:
            async with engine.connect() as conn:
                ids = [
                    int(r[0])
                    for r in await conn.execute(
                        sa.text("select id from source_identity where customer_id is null")
                    )
                ]
        report = await link_source_identities(engine, ids or [], actor=actor)
        return report

    report = with_engine(work)
    typer.echo(
        json.dumps(
            {
                "linked": report.linked,
                "created": report.created,
                "merged": report.merged,
                "queued_for_review": report.queued_for_review,
                "refused": report.refused,
                "customers_touched": len(report.customers_touched),
            }
        )
    )


@identity_app.command("merge")
def merge(
    customer_ids: Annotated[
        list[int], typer.Argument(help="Two or more golden customer ids; the oldest survives.")
    ],
    actor: Annotated[str, typer.Option(help="Who merges (staff user), for the audit trail.")],
    reason: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show the resulting golden record; write nothing.")] = False,
) -> None:
    """Merge golden customers (orders, points, interactions, cases and consents follow)."""
    from identity.merge import MergeError, merge_with_engine

    try:
        preview = with_engine(
            lambda engine: merge_with_engine(
                engine, customer_ids, actor=actor, reason=reason, dry_run=dry_run
            )
        )
    except MergeError as exc:
        _fail(str(exc))
    typer.echo(
        json.dumps(
            {
                "dry_run": dry_run,
                "surviving_customer_id": preview.surviving_customer_id,
                "absorbed_customer_ids": preview.absorbed_customer_ids,
                "golden": preview.golden,
                "evidence": preview.evidence,
                "merge_event_id": preview.merge_event_id,
            },
            ensure_ascii=False,
            default=str,
        )
    )


@identity_app.command("unmerge")
def unmerge(
    actor: Annotated[str, typer.Option(help="Who unmerges, for the audit trail.")],
    event: Annotated[int | None, typer.Option(help="Undo this merge event.")] = None,
    identity: Annotated[int | None, typer.Option(help="Split this source identity off its customer.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
) -> None:
    """Undo a merge event, or split one source identity off its customer."""
    from identity.merge import MergeError, unmerge_event, unmerge_identity

    if (event is None) == (identity is None):
        _fail("give exactly one of --event (a merge event id) or --identity (a source identity id)")

    async def work(engine: Any) -> Any:
        async with engine.begin() as conn:
            if event is not None:
                return await unmerge_event(conn, event, actor=actor, reason=reason)
            assert identity is not None
            return await unmerge_identity(conn, identity, actor=actor, reason=reason)

    try:
        result = with_engine(work)
    except MergeError as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"merge_event_id": result.merge_event_id, "customer_ids": result.customer_ids}))


@identity_app.command("erase")
def erase(
    customer_id: Annotated[int, typer.Argument(help="The active (surviving) golden customer.")],
    actor: Annotated[str, typer.Option(help="Who erases, for the audit trail.")],
    reason: Annotated[str, typer.Option(help="Why (e.g. the request's reference), for the audit trail.")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: an erasure cannot be undone.")] = False,
) -> None:
    """Erase a person (PIPL/GDPR): their data removed everywhere, their identifiers suppressed so that syncs
    do not bring them back; orders keep their totals. Cannot be undone."""
    from identity.erasure import ErasureError, erase_customer

    if not yes:
        _fail("an erasure cannot be undone: run again with --yes to confirm")

    async def work(engine: Any) -> Any:
        async with engine.begin() as conn:
            return await erase_customer(conn, customer_id, actor=actor, reason=reason)

    try:
        result = with_engine(work)
    except ErasureError as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"erased_customer_ids": result.customer_ids, "identities": result.identities,
                           "suppressed": result.suppressed, "quarantined_removed": result.quarantined_removed}))  # fmt: skip


@review_app.command("list")
def review_list(limit: Annotated[int, typer.Option(help="How many, highest score first.")] = 20) -> None:
    """Pending review pairs with their score and matched features."""
    import sqlalchemy as sa

    async def work(engine: Any) -> list[Any]:
        async with engine.connect() as conn:
            result = await conn.execute(
                sa.text(
                    "select id, left_identity_id, right_identity_id, score, features from identity_review"
                    " where status = 'pending' order by score desc limit :n"
                ),
                {"n": limit},
            )
            return list(result.all())

    table = Table(title="Pending identity reviews")
    for column in ("id", "left", "right", "score", "features"):
        table.add_column(column)
    for row in with_engine(work):
        table.add_row(
            str(row[0]), str(row[1]), str(row[2]), f"{row[3]:.3f}", json.dumps(row[4], ensure_ascii=False)
        )
    Console().print(table)


def _decide(review_id: int, accept: bool, actor: str) -> None:
    from identity.linking import resolve_review

    try:
        report = with_engine(lambda engine: resolve_review(engine, review_id, accept=accept, actor=actor))
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(
        json.dumps(
            {
                "review_id": review_id,
                "accepted": accept,
                "merge_event_ids": report.merge_event_ids if report else [],
            }
        )
    )


@review_app.command("accept")
def review_accept(review_id: int, actor: Annotated[str, typer.Option(help="Who decides.")]) -> None:
    """Accept a pair: the two customers are merged (oldest id wins), with the review as evidence."""
    _decide(review_id, True, actor)


@review_app.command("reject")
def review_reject(review_id: int, actor: Annotated[str, typer.Option(help="Who decides.")]) -> None:
    """Reject a pair: linking will never join these two identities."""
    _decide(review_id, False, actor)
