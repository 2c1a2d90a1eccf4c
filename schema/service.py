"""Service in the graph: `Customer.serviceCases`, `case(id)` with its events, `caseQueue` ordered by the SLA
time left, and the case mutations `openCase`, `transitionCase`, `assignCase`.

Reads go through per-request DataLoaders (one statement per kind of row for every case in the query).
Mutations run crm.service.cases in one transaction; a refusal rolls it back and comes back as a userError
with a stable code. A transition that executes a resolution (compensation, points) needs an idempotencyKey.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON

from crm.loyalty.service import LoyaltyRefusal, in_transaction
from crm.service import cases, feedback, surveys
from crm.service.cases import CaseOpening, Resolution, ServiceRefusal, Step
from crm.service.config import ServiceConfig, get_config
from crm.service.stats import satisfaction_measures, satisfaction_stats, service_stats
from schema.context import Info
from schema.errors import BadInput, UserError
from schema.loaders import PageArgs, _by, customer_page_sql, customer_pages, fetch_page, rows
from schema.permissions import IsStaff, acting_customer, customer_visible
from schema.relay import (
    Connection,
    Node,
    connection,
    decode_cursor,
    int_id,
    page_size,
    time_keyset,
    to_global_id,
)
from schema.scalars import Money

CASE_COLUMNS = (
    "x.id, x.case_no, x.customer_id, x.order_id, x.order_line_no, x.store_id, x.product_id, x.channel_code,"
    " x.source, x.type, x.status, x.priority, x.subject, x.description, x.request, x.department, x.assignee,"
    " x.explanation, x.cause, x.responsible_party, x.resolution, x.compensation_fen, x.points_granted,"
    " x.outcome, x.reopen_count, x.sla_clock, x.first_response_due_at, x.resolve_due_at,"
    " x.first_response_breached_at, x.resolve_breached_at, x.sla_due_at, x.opened_by, x.opened_at,"
    " x.first_response_at, x.resolved_at, x.closed_at, x.approved_by, x.summary, x.customer_feedback"
)
CASE_FILTERS = (("status", "x.status = :status", "status"), ("type", "x.type = :type", "type"))
SURVEY_COLUMNS = (
    "x.id, x.customer_id, x.case_id, x.order_id, x.store_id, x.survey_code, x.kind, x.score, x.expected_score,"
    " x.perceived_score, x.answers, x.comment, x.channel_code, x.responded_at"
)
SURVEY_FILTERS = (("survey", "x.survey_code = :survey", "survey"),)
FEEDBACK_COLUMNS = (
    "x.id, x.customer_id, x.channel_code, x.source, x.body, x.need_type, x.priority, x.sentiment, x.keywords,"
    " x.classified_by, x.status, x.owner, x.order_id, x.case_id, x.survey_response_id, x.created_at, x.updated_at"
)
FEEDBACK_FILTERS = (
    ("status", "x.status = :status", "status"),
    ("priority", "x.priority = :priority", "priority"),
    ("need", "x.need_type = :need", "need"),
)
# The counts and sums crm.service.stats.satisfaction_measures turns into CSAT, NPS and the index.
SATISFACTION_SUMS = (
    "count(r.id) as responses, count(*) filter (where r.kind = 'csat') as csat_responses,"
    " count(*) filter (where r.kind = 'csat' and r.score >= 4) as satisfied,"
    " avg(r.score) filter (where r.kind = 'csat') as csat_mean,"
    " count(*) filter (where r.kind = 'nps') as nps_responses,"
    " count(*) filter (where r.kind = 'nps' and r.score >= 9) as promoters,"
    " count(*) filter (where r.kind = 'nps' and r.score <= 6) as detractors,"
    " sum(r.perceived_score) filter (where r.expected_score is not null and r.perceived_score is not null) as perceived_sum,"
    " sum(r.expected_score) filter (where r.expected_score is not null and r.perceived_score is not null) as expected_sum"
)


class ServiceLoaders:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.case = DataLoader(self._cases)
        self.events = DataLoader(self._events)
        self.cases_page: DataLoader[tuple[int, PageArgs], Any] = DataLoader(
            self._case_pages, cache_key_fn=lambda k: k
        )
        self.surveys_page: DataLoader[tuple[int, PageArgs], Any] = DataLoader(
            self._survey_pages, cache_key_fn=lambda k: k
        )
        self.feedback_page: DataLoader[tuple[int, PageArgs], Any] = DataLoader(
            self._feedback_pages, cache_key_fn=lambda k: k
        )
        self.satisfaction = DataLoader(self._satisfaction)

    async def _survey_pages(self, keys: Sequence[tuple[int, PageArgs]]) -> list[Any]:
        return await customer_pages(
            self.engine,
            keys,
            lambda filters, after: customer_page_sql(
                "survey_response", SURVEY_COLUMNS, "x.responded_at", SURVEY_FILTERS, filters, after
            ),
        )

    async def _feedback_pages(self, keys: Sequence[tuple[int, PageArgs]]) -> list[Any]:
        return await customer_pages(
            self.engine,
            keys,
            lambda filters, after: customer_page_sql(
                "feedback", FEEDBACK_COLUMNS, "x.created_at", FEEDBACK_FILTERS, filters, after
            ),
        )

    async def _satisfaction(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        found = await rows(
            self.engine,
            f"select c.id, {SATISFACTION_SUMS} from unnest(cast(:ids as bigint[])) as c(id)"
            " left join survey_response r on r.customer_id = c.id group by c.id",
            ids=list(ids),
        )
        by_id = {r["id"]: r for r in found}
        return [by_id[i] for i in ids]

    async def _cases(self, ids: Sequence[int]) -> list[dict[str, Any] | None]:
        found = await rows(
            self.engine,
            f"select {CASE_COLUMNS} from service_case x where x.id = any(cast(:ids as bigint[]))",
            ids=list(ids),
        )
        by_id = {r["id"]: r for r in found}
        return [by_id.get(i) for i in ids]

    async def _events(self, ids: Sequence[int]) -> list[list[dict[str, Any]]]:
        found = await rows(
            self.engine,
            "select id, case_id, kind, action, actor, from_status, to_status, note, detail, created_at"
            " from case_event where case_id = any(cast(:ids as bigint[])) order by case_id, created_at, id",
            ids=list(ids),
        )
        grouped = _by("case_id", found)
        return [grouped.get(i, []) for i in ids]

    async def _case_pages(self, keys: Sequence[tuple[int, PageArgs]]) -> list[Any]:
        return await customer_pages(
            self.engine,
            keys,
            lambda filters, after: customer_page_sql(
                "service_case", CASE_COLUMNS, "x.opened_at", CASE_FILTERS, filters, after
            ),
        )


def service_loaders(info: Info) -> ServiceLoaders:
    found = info.context.domain_loaders.get("service")
    if found is None:
        found = info.context.domain_loaders["service"] = ServiceLoaders(info.context.engine)
    return found


def validate_rules(path: Any) -> ServiceConfig:
    """The service rules at `path`, validated (the API calls this at start: a bad file names its key)."""
    from crm.service.config import load_config

    return load_config(path)


# --------------------------------------------------------------------------- types


@strawberry.type(description="One step of a case: who did what, from which status to which.")
class CaseEvent:
    kind: str = strawberry.field(description="opened, transition, assigned or sla_breached.")
    action: str | None = strawberry.field(description="The configured step's name (e.g. 'cause analysed').")
    actor: str | None
    from_status: str | None
    to_status: str | None
    note: str | None
    detail: JSON = strawberry.field(
        description="What the step recorded: department, cause, resolution, grants."
    )
    created_at: datetime


@strawberry.type(description="A step the case can take from its status now.")
class CaseTransition:
    to: str
    name: str
    requires: list[str] = strawberry.field(description="Input fields the step needs (camelCase).")
    role: str = strawberry.field(description="staff, or staff_admin for approvals.")


@strawberry.type(
    description="What the case resolves with: the kind, and compensation and points granted on execution."
)
class CaseResolution:
    kind: str
    compensation: Money
    points: int
    note: str | None


@strawberry.type(
    description="A complaint, inquiry, return/exchange or repair, on its type's configured flow."
)
class ServiceCase(Node):
    row: strawberry.Private[dict[str, Any]]

    @strawberry.field
    def case_no(self) -> str:
        return str(self.row["case_no"])

    @strawberry.field(description="complaint, inquiry, return or repair (configured).")
    def type(self) -> str:
        return str(self.row["type"])

    @strawberry.field
    def status(self) -> str:
        return str(self.row["status"])

    @strawberry.field(description="low, normal, high or urgent.")
    def priority(self) -> str:
        return str(self.row["priority"])

    @strawberry.field
    def subject(self) -> str:
        return str(self.row["subject"])

    @strawberry.field
    def description(self) -> str | None:
        return self.row["description"]

    @strawberry.field(description="What the customer asks for.")
    def request(self) -> str | None:
        return self.row["request"]

    @strawberry.field(description="Where it was opened: service_desk, app, wechat, store, ...")
    def source(self) -> str:
        return str(self.row["source"])

    @strawberry.field
    def channel(self) -> str | None:
        return self.row["channel_code"]

    @strawberry.field
    def customer_id(self) -> strawberry.ID | None:
        c = self.row["customer_id"]
        return to_global_id("Customer", c) if c else None

    @strawberry.field
    def order_id(self) -> strawberry.ID | None:
        o = self.row["order_id"]
        return to_global_id("Order", o) if o else None

    @strawberry.field
    def order_line_no(self) -> int | None:
        return self.row["order_line_no"]

    @strawberry.field
    def store_id(self) -> strawberry.ID | None:
        s = self.row["store_id"]
        return to_global_id("Store", s) if s else None

    @strawberry.field
    def product_id(self) -> strawberry.ID | None:
        p = self.row["product_id"]
        return to_global_id("Product", p) if p else None

    @strawberry.field
    def department(self) -> str | None:
        return self.row["department"]

    @strawberry.field
    def assignee(self) -> str | None:
        return self.row["assignee"]

    @strawberry.field(description="Given to the customer when the case was judged invalid.")
    def explanation(self) -> str | None:
        return self.row["explanation"]

    @strawberry.field
    def cause(self) -> str | None:
        return self.row["cause"]

    @strawberry.field
    def responsible_party(self) -> str | None:
        return self.row["responsible_party"]

    @strawberry.field
    def resolution(self) -> CaseResolution | None:
        r = self.row["resolution"]
        if not r:
            return None
        return CaseResolution(kind=r["kind"], compensation=Money(fen=int(r.get("compensation_fen") or 0)),
                              points=int(r.get("points") or 0), note=r.get("note"))  # fmt: skip

    @strawberry.field(
        description="Compensation granted on execution (as a coupon through the loyalty programme)."
    )
    def compensation_granted(self) -> Money:
        return Money(fen=int(self.row["compensation_fen"]))

    @strawberry.field
    def points_granted(self) -> int:
        return int(self.row["points_granted"])

    @strawberry.field(description="Who approved the resolution (staff_admin).")
    def approved_by(self) -> str | None:
        return self.row["approved_by"]

    @strawberry.field
    def summary(self) -> str | None:
        return self.row["summary"]

    @strawberry.field(description="The customer's feedback on the outcome.")
    def customer_feedback(self) -> str | None:
        return self.row["customer_feedback"]

    @strawberry.field(description="resolved or invalid once closed.")
    def outcome(self) -> str | None:
        return self.row["outcome"]

    @strawberry.field
    def reopen_count(self) -> int:
        return int(self.row["reopen_count"])

    @strawberry.field(description="calendar or business: the clock the SLA counts on.")
    def sla_clock(self) -> str:
        return str(self.row["sla_clock"])

    @strawberry.field
    def first_response_due_at(self) -> datetime | None:
        return self.row["first_response_due_at"]

    @strawberry.field
    def resolve_due_at(self) -> datetime | None:
        return self.row["resolve_due_at"]

    @strawberry.field
    def first_response_breached_at(self) -> datetime | None:
        return self.row["first_response_breached_at"]

    @strawberry.field
    def resolve_breached_at(self) -> datetime | None:
        return self.row["resolve_breached_at"]

    @strawberry.field(description="True once either SLA was breached (kept after the case closes).")
    def breached(self) -> bool:
        return bool(self.row["first_response_breached_at"] or self.row["resolve_breached_at"])

    @strawberry.field(description="The next deadline still running: first response, then resolution.")
    def sla_due_at(self) -> datetime | None:
        return self.row["sla_due_at"]

    @strawberry.field(description="Seconds until slaDueAt (negative: overdue); null once closed.")
    def sla_seconds_left(self) -> int | None:
        due = self.row["sla_due_at"]
        return None if due is None else int((due - datetime.now(UTC)).total_seconds())

    @strawberry.field
    def opened_by(self) -> str | None:
        return self.row["opened_by"]

    @strawberry.field
    def opened_at(self) -> datetime:
        value: datetime = self.row["opened_at"]
        return value

    @strawberry.field
    def first_response_at(self) -> datetime | None:
        return self.row["first_response_at"]

    @strawberry.field
    def resolved_at(self) -> datetime | None:
        return self.row["resolved_at"]

    @strawberry.field
    def closed_at(self) -> datetime | None:
        return self.row["closed_at"]

    @strawberry.field(description="The steps the case can take now (from the configured flow).")
    def allowed_transitions(self) -> list[CaseTransition]:
        ctype = get_config().case_type(self.row["type"])
        if ctype is None:
            return []
        camel = cases.CAMEL
        return [
            CaseTransition(to=t.to, name=t.name, requires=[camel.get(r, r) for r in t.requires], role=t.role)
            for t in ctype.allowed_from(self.row["status"])
        ]

    @strawberry.field(description="Every step, oldest first.")
    async def events(self, info: Info) -> list[CaseEvent]:
        found = await service_loaders(info).events.load(int(self.row["id"]))
        return [
            CaseEvent(kind=r["kind"], action=r["action"], actor=r["actor"], from_status=r["from_status"],
                      to_status=r["to_status"], note=r["note"], detail=r["detail"], created_at=r["created_at"])
            for r in found
        ]  # fmt: skip


def case_node(row: dict[str, Any]) -> ServiceCase:
    return ServiceCase(id=to_global_id("ServiceCase", row["id"]), row=row)


def _opened_key(r: dict[str, Any]) -> list[Any]:
    return [r["opened_at"].isoformat(), r["id"]]


@strawberry.input
class CustomerCaseFilter:
    status: str | None = None
    type: str | None = None


@strawberry.type
class ServiceFields:
    """Customer's service fields (a CUSTOMER_MIXINS member: resolvers read self.pk)."""

    pk: strawberry.Private[int]

    @strawberry.field(description="The customer's service cases, newest first.")
    async def service_cases(
        self,
        info: Info,
        filter: CustomerCaseFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[ServiceCase] | None:
        if not customer_visible(info, self.pk):
            return None
        n = page_size(first)
        f = filter or CustomerCaseFilter()
        filters = tuple((k, v) for k, v in (("status", f.status), ("type", f.type)) if v)
        page = await service_loaders(info).cases_page.load((self.pk, (filters, n, time_keyset(after))))
        result: Connection[ServiceCase] = connection(page, n, after, _opened_key, case_node)
        return result

    @strawberry.field(description="The customer's survey responses, newest first.")
    async def surveys(
        self, info: Info, survey: str | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[SurveyResponse] | None:
        if not customer_visible(info, self.pk):
            return None
        n = page_size(first)
        filters = (("survey", survey),) if survey else ()
        page = await service_loaders(info).surveys_page.load((self.pk, (filters, n, time_keyset(after))))
        result: Connection[SurveyResponse] = connection(
            page, n, after, lambda r: [r["responded_at"].isoformat(), r["id"]], survey_node
        )
        return result

    @strawberry.field(description="The customer's feedback, newest first.")
    async def feedback(
        self, info: Info, status: str | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[FeedbackItem] | None:
        if not customer_visible(info, self.pk):
            return None
        n = page_size(first)
        filters = (("status", status),) if status else ()
        page = await service_loaders(info).feedback_page.load((self.pk, (filters, n, time_keyset(after))))
        result: Connection[FeedbackItem] = connection(
            page, n, after, lambda r: [r["created_at"].isoformat(), r["id"]], feedback_node
        )
        return result

    @strawberry.field(
        description="CSAT, NPS and the satisfaction index (perceived / expected) of every response."
    )
    async def satisfaction(self, info: Info) -> Satisfaction | None:
        if not customer_visible(info, self.pk):
            return None
        row = await service_loaders(info).satisfaction.load(self.pk)
        return satisfaction_of(row)


# --------------------------------------------------------------------------- surveys, feedback, statistics


@strawberry.type(description="CSAT (share scoring 4-5 of 5), NPS (promoters minus detractors), index.")
class Satisfaction:
    responses: int
    csat: float | None = strawberry.field(description="Share of CSAT answers scoring 4 or 5 (0 to 1).")
    csat_mean: float | None = strawberry.field(description="Mean CSAT score (1 to 5).")
    nps: float | None = strawberry.field(description="Promoters (9-10) minus detractors (0-6), -100 to 100.")
    index: float | None = strawberry.field(
        description="Perceived over expected: the sum of perceived scores over the sum of expected ones."
    )


def satisfaction_of(row: dict[str, Any]) -> Satisfaction:
    m = satisfaction_measures(row)
    return Satisfaction(responses=int(row["responses"]), csat=m["csat"], csat_mean=m["csat_mean"], nps=m["nps"],
                        index=m["index"])  # fmt: skip


@strawberry.type(description="One answered survey.")
class SurveyResponse(Node):
    survey: str | None
    kind: str = strawberry.field(description="csat (1-5) or nps (0-10).")
    score: int
    expected_score: int | None
    perceived_score: int | None
    satisfaction_index: float | None = strawberry.field(description="perceivedScore / expectedScore.")
    answers: JSON
    comment: str | None
    case_id: strawberry.ID | None
    order_id: strawberry.ID | None
    channel: str | None
    responded_at: datetime


def survey_node(r: dict[str, Any]) -> SurveyResponse:
    e, p = r["expected_score"], r["perceived_score"]
    return SurveyResponse(
        id=to_global_id("SurveyResponse", r["id"]), survey=r["survey_code"], kind=r["kind"], score=r["score"],
        expected_score=e, perceived_score=p, satisfaction_index=p / e if e and p is not None else None,
        answers=r["answers"], comment=r["comment"],
        case_id=to_global_id("ServiceCase", r["case_id"]) if r["case_id"] else None,
        order_id=to_global_id("Order", r["order_id"]) if r["order_id"] else None,
        channel=r["channel_code"], responded_at=r["responded_at"],
    )  # fmt: skip


@strawberry.type(description="Free-form feedback, classified by need and priority (rules, or staff).")
class FeedbackItem(Node):
    source: str
    channel: str | None
    body: str
    need: str = strawberry.field(description="functional, emotional or social (configured).")
    priority: str = strawberry.field(description="high, medium or low.")
    sentiment: str
    keywords: list[str] = strawberry.field(description="The rule keywords found in the segmented text.")
    classified_by: str = strawberry.field(description="rules, or the staff member who overrode it.")
    status: str = strawberry.field(description="new, acknowledged, acted_on or closed.")
    owner: str | None
    case_id: strawberry.ID | None = strawberry.field(description="The complaint it opened, if any.")
    created_at: datetime


def feedback_node(r: dict[str, Any]) -> FeedbackItem:
    return FeedbackItem(
        id=to_global_id("Feedback", r["id"]), source=r["source"], channel=r["channel_code"], body=r["body"],
        need=r["need_type"], priority=r["priority"], sentiment=r["sentiment"], keywords=list(r["keywords"]),
        classified_by=r["classified_by"], status=r["status"], owner=r["owner"],
        case_id=to_global_id("ServiceCase", r["case_id"]) if r["case_id"] else None, created_at=r["created_at"],
    )  # fmt: skip


@strawberry.type(description="A survey of the configuration, with its questions and scales.")
class SurveyQuestion:
    code: str
    text: str
    min: int
    max: int


@strawberry.type
class SurveyDefinition:
    code: str
    name: str
    kind: str
    trigger: str
    expected_perceived: bool
    questions: list[SurveyQuestion]


def resolve_survey_definitions() -> list[SurveyDefinition]:
    return [
        SurveyDefinition(code=s.code, name=s.name, kind=s.kind, trigger=s.trigger,
                         expected_perceived=s.expected_perceived,
                         questions=[SurveyQuestion(code=q.code, text=q.text, min=q.min, max=q.max) for q in s.questions])
        for s in get_config().surveys
    ]  # fmt: skip


@strawberry.input(description="From `from` (inclusive) to `to` (exclusive).")
class DateRangeInput:
    from_: datetime = strawberry.field(name="from")
    to: datetime


@strawberry.enum
class ServiceGrouping(enum.Enum):
    TYPE = "type"
    CAUSE = "cause"
    DEPARTMENT = "department"
    CHANNEL = "channel"
    SOURCE = "source"
    STORE = "store"
    PRIORITY = "priority"
    MONTH = "month"


@strawberry.enum
class SatisfactionGrouping(enum.Enum):
    SEGMENT = "segment"
    TIER = "tier"
    CHANNEL = "channel"
    STORE = "store"
    MONTH = "month"
    SURVEY = "survey"


@strawberry.type
class OutcomeCount:
    outcome: str = strawberry.field(description="The resolution kind, invalid, open or closed.")
    count: int


@strawberry.type(description="Service figures of the cases opened in the range, for one group.")
class ServiceStatsRow:
    group: str
    volume: int
    first_response_hours: float | None = strawberry.field(
        description="Mean hours from opening to first response."
    )
    first_response_median_hours: float | None
    resolve_hours: float | None = strawberry.field(description="Mean hours from opening to resolution.")
    resolve_median_hours: float | None
    breach_rate: float | None = strawberry.field(description="Share of cases that breached either SLA.")
    reopen_rate: float | None = strawberry.field(
        description="Share of the cases closed at least once that reopened."
    )
    outcomes: list[OutcomeCount]


@strawberry.type(description="Satisfaction of the responses in the range, for one group.")
class SatisfactionStatsRow:
    group: str
    satisfaction: Satisfaction
    invitations: int | None = strawberry.field(
        description="Survey invitations sent (null: not by this grouping)."
    )
    response_rate: float | None


def _range(r: DateRangeInput) -> tuple[datetime, datetime]:
    if r.to <= r.from_:
        raise BadInput("range: `to` must be after `from`", field="range")
    return r.from_, r.to


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


async def resolve_service_stats(
    info: Info, range: DateRangeInput, group_by: ServiceGrouping = ServiceGrouping.TYPE
) -> list[ServiceStatsRow]:
    start, end = _range(range)
    async with info.context.engine.connect() as conn:
        found = await service_stats(
            conn, start=start, end=end, group_by=group_by.value, tz=get_config().timezone
        )
    return [
        ServiceStatsRow(
            group=r["grp"], volume=r["volume"], first_response_hours=_num(r["first_response_hours"]),
            first_response_median_hours=_num(r["first_response_median_hours"]), resolve_hours=_num(r["resolve_hours"]),
            resolve_median_hours=_num(r["resolve_median_hours"]), breach_rate=r["breach_rate"],
            reopen_rate=r["reopen_rate"],
            outcomes=[OutcomeCount(outcome=k, count=int(v)) for k, v in (r["outcomes"] or {}).items()],
        )
        for r in found
    ]  # fmt: skip


async def resolve_satisfaction_stats(
    info: Info, range: DateRangeInput, group_by: SatisfactionGrouping = SatisfactionGrouping.MONTH
) -> list[SatisfactionStatsRow]:
    start, end = _range(range)
    async with info.context.engine.connect() as conn:
        found = await satisfaction_stats(
            conn, start=start, end=end, group_by=group_by.value, tz=get_config().timezone
        )
    return [
        SatisfactionStatsRow(group=r["grp"], satisfaction=satisfaction_of(r), invitations=r["invitations"],
                             response_rate=r["response_rate"])
        for r in found
    ]  # fmt: skip


@strawberry.input
class AnswerInput:
    question: str
    score: int


@strawberry.input
class SubmitSurveyInput:
    survey: str = strawberry.field(description="A configured survey's code (surveyDefinitions).")
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Omitted with a member token."
    )
    case_id: strawberry.ID | None = None
    order_id: strawberry.ID | None = None
    answers: list[AnswerInput]
    comment: str | None = strawberry.field(default=None, description="Kept as feedback too, classified.")
    channel: str | None = None


@strawberry.type
class SurveyPayload:
    response: SurveyResponse | None
    feedback: FeedbackItem | None = strawberry.field(description="The comment, classified.")
    user_errors: list[UserError]


@strawberry.input
class RecordFeedbackInput:
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Omitted with a member token."
    )
    body: str
    source: str = strawberry.field(description="review, wechat, survey, app, store, ...")
    channel: str | None = None
    order_id: strawberry.ID | None = None


@strawberry.input
class ClassifyFeedbackInput:
    id: strawberry.ID
    need: str | None = None
    priority: str | None = None
    status: str | None = strawberry.field(default=None, description="new, acknowledged, acted_on or closed.")
    owner: str | None = None


@strawberry.type
class FeedbackPayload:
    feedback: FeedbackItem | None
    case: ServiceCase | None = strawberry.field(
        description="The complaint high-priority negative feedback opened."
    )
    user_errors: list[UserError]


async def _one(info: Info, sql: str, **params: Any) -> dict[str, Any] | None:
    found = await rows(info.context.engine, sql, **params)
    return found[0] if found else None


async def submit_survey_mutation(info: Info, input: SubmitSurveyInput) -> SurveyPayload:
    customer = acting_customer(info, input.customer_id)
    answers = {a.question: a.score for a in input.answers}
    if len(answers) != len(input.answers):
        raise BadInput("answers: each question once", field="answers")
    actor = info.context.principal.actor

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        return await surveys.submit_survey(
            conn, get_config(), survey_code=input.survey, customer_id=customer, answers=answers, actor=actor,
            now=datetime.now(UTC), case_id=int_id(input.case_id, "ServiceCase") if input.case_id else None,
            order_id=int_id(input.order_id, "Order") if input.order_id else None, comment=input.comment,
            channel_code=input.channel,
        )  # fmt: skip

    try:
        result = await in_transaction(info.context.engine, work)
    except ServiceRefusal as exc:
        return SurveyPayload(response=None, feedback=None, user_errors=_refusal(exc))
    row = await _one(info, f"select {SURVEY_COLUMNS} from survey_response x where x.id = :i", i=result["id"])
    fb = None
    if result["feedback"]:
        fb = await _one(
            info, f"select {FEEDBACK_COLUMNS} from feedback x where x.id = :i", i=result["feedback"]["id"]
        )
    return SurveyPayload(response=survey_node(row) if row else None, feedback=feedback_node(fb) if fb else None,
                         user_errors=[])  # fmt: skip


async def _feedback_payload(info: Info, feedback_id: int) -> FeedbackPayload:
    fb = await _one(info, f"select {FEEDBACK_COLUMNS} from feedback x where x.id = :i", i=feedback_id)
    case = None
    if fb and fb["case_id"]:
        case = await service_loaders(info).case.load(int(fb["case_id"]))
    return FeedbackPayload(feedback=feedback_node(fb) if fb else None, case=case_node(case) if case else None,
                           user_errors=[])  # fmt: skip


async def record_feedback_mutation(info: Info, input: RecordFeedbackInput) -> FeedbackPayload:
    customer = acting_customer(info, input.customer_id)
    actor = info.context.principal.actor

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        return await feedback.record_feedback(
            conn, get_config(), body=input.body, source=input.source, customer_id=customer, actor=actor,
            now=datetime.now(UTC), channel_code=input.channel,
            order_id=int_id(input.order_id, "Order") if input.order_id else None,
        )  # fmt: skip

    try:
        result = await in_transaction(info.context.engine, work)
    except ServiceRefusal as exc:
        return FeedbackPayload(feedback=None, case=None, user_errors=_refusal(exc))
    return await _feedback_payload(info, int(result["id"]))


async def classify_feedback_mutation(info: Info, input: ClassifyFeedbackInput) -> FeedbackPayload:
    feedback_id = int_id(input.id, "Feedback")
    actor = info.context.principal.actor

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        return await feedback.classify_feedback(
            conn, get_config(), feedback_id, actor=actor, now=datetime.now(UTC), need=input.need,
            priority=input.priority, status=input.status, owner=input.owner,
        )  # fmt: skip

    try:
        await in_transaction(info.context.engine, work)
    except ServiceRefusal as exc:
        return FeedbackPayload(feedback=None, case=None, user_errors=_refusal(exc))
    return await _feedback_payload(info, feedback_id)


# --------------------------------------------------------------------------- queries


async def resolve_case(info: Info, id: strawberry.ID) -> ServiceCase | None:
    row = await service_loaders(info).case.load(int_id(id, "ServiceCase"))
    if row is None or row["customer_id"] is None and info.context.principal.is_member:
        return None
    if row["customer_id"] is not None and not customer_visible(info, int(row["customer_id"])):
        return None  # a member asking for someone else's case gets null, as for one that does not exist
    return case_node(row)


@strawberry.input(description="Which cases the queue shows; open cases only unless a status is given.")
class CaseQueueFilter:
    status: str | None = None
    type: str | None = None
    priority: str | None = None
    breached: bool | None = None
    department: str | None = None
    assignee: str | None = None


FAR = datetime(9999, 1, 1, tzinfo=UTC)


def _queue_key(r: dict[str, Any]) -> list[Any]:
    return [(r["sla_due_at"] or FAR).isoformat(), r["id"]]


async def resolve_case_queue(
    info: Info, filter: CaseQueueFilter | None = None, first: int | None = None, after: str | None = None
) -> Connection[ServiceCase]:
    """Cases by SLA time left, the most urgent first (cases with no running deadline last)."""
    n = page_size(first)
    f = filter or CaseQueueFilter()
    where = ["x.closed_at is null" if f.status is None else "x.status = :status"]
    params: dict[str, Any] = {"lim": n + 1, "far": FAR, "status": f.status}
    for name, cond in (("type", "x.type = :type"), ("priority", "x.priority = :priority"),
                       ("department", "x.department = :department"), ("assignee", "x.assignee = :assignee")):  # fmt: skip
        value = getattr(f, name)
        if value is not None:
            where.append(cond)
            params[name] = value
    if f.breached is not None:
        breached = "(x.first_response_breached_at is not null or x.resolve_breached_at is not null)"
        where.append(breached if f.breached else f"not {breached}")
    cond = " and ".join(where)
    keyset = ""
    key = decode_cursor(after)
    if key is not None:
        try:
            params["after_ts"], params["after_id"] = datetime.fromisoformat(str(key[0])), int(key[1])
        except (IndexError, TypeError, ValueError) as exc:
            raise BadInput(f"after: {after!r} is not a cursor of this connection") from exc
        keyset = " and (coalesce(x.sla_due_at, :far), x.id) > (:after_ts, :after_id)"
    sql = (
        f"select t.total as _total, p.* from (select count(*) as total from service_case x where {cond}) t"
        f" left join lateral (select {CASE_COLUMNS} from service_case x where {cond}{keyset}"
        " order by coalesce(x.sla_due_at, :far), x.id limit :lim) p on true"
        " order by coalesce(p.sla_due_at, :far), p.id"
    )
    page = await fetch_page(info.context.engine, sql, **params)
    result: Connection[ServiceCase] = connection(page, n, after, _queue_key, case_node)
    return result


# --------------------------------------------------------------------------- mutations


@strawberry.type
class CasePayload:
    case: ServiceCase | None
    replayed: bool = strawberry.field(
        description="True when this idempotencyKey was seen: nothing was redone."
    )
    user_errors: list[UserError]


@strawberry.input
class OpenCaseInput:
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Omitted with a member token."
    )
    type: str = strawberry.field(description="complaint, inquiry, return or repair (configured).")
    subject: str
    priority: str = "normal"
    source: str = strawberry.field(
        default="service_desk", description="service_desk, app, wechat, store, ..."
    )
    description: str | None = None
    request: str | None = strawberry.field(default=None, description="What the customer asks for.")
    channel: str | None = None
    order_id: strawberry.ID | None = None
    order_line_no: int | None = None
    store_id: strawberry.ID | None = None
    product_id: strawberry.ID | None = None


@strawberry.input
class ResolutionInput:
    kind: str = strawberry.field(
        description="return, exchange, repair, discount, compensation or explanation."
    )
    compensation_fen: int = strawberry.field(
        default=0, description="Money in fen (whole yuan): granted as a coupon."
    )
    points: int = 0
    note: str | None = None


@strawberry.input(
    description="Move a case to `to`; the fields a step requires are listed in allowedTransitions."
)
class TransitionCaseInput:
    case_id: strawberry.ID
    to: str
    note: str | None = None
    explanation: str | None = None
    department: str | None = None
    cause: str | None = None
    responsible_party: str | None = None
    resolution: ResolutionInput | None = None
    reason: str | None = None
    summary: str | None = None
    customer_feedback: str | None = None
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Required for a step that grants the resolution; a retry returns the first result.",
    )


@strawberry.input
class AssignCaseInput:
    case_id: strawberry.ID
    assignee: str | None = None
    department: str | None = None


def _refusal(exc: ServiceRefusal | LoyaltyRefusal) -> list[UserError]:
    return [UserError(field=[exc.field] if exc.field else None, message=exc.message, code=exc.code)]


async def _case_call(info: Info, work: Any) -> CasePayload:
    try:
        result = await in_transaction(info.context.engine, work)
    except (ServiceRefusal, LoyaltyRefusal) as exc:
        return CasePayload(case=None, replayed=False, user_errors=_refusal(exc))
    info.context.domain_loaders.pop("service", None)
    row = await service_loaders(info).case.load(int(result.get("case_id") or result["id"]))
    return CasePayload(
        case=case_node(row) if row else None, replayed=bool(result.get("replayed")), user_errors=[]
    )


async def open_case_mutation(info: Info, input: OpenCaseInput) -> CasePayload:
    customer = acting_customer(info, input.customer_id)
    opening = CaseOpening(
        customer_id=customer, type=input.type, subject=input.subject, priority=input.priority, source=input.source,
        description=input.description, request=input.request, channel_code=input.channel,
        order_id=int_id(input.order_id, "Order") if input.order_id else None, order_line_no=input.order_line_no,
        store_id=int_id(input.store_id, "Store") if input.store_id else None,
        product_id=int_id(input.product_id, "Product") if input.product_id else None,
    )  # fmt: skip
    actor = info.context.principal.actor

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        return await cases.open_case(conn, get_config(), opening, actor=actor, now=datetime.now(UTC))

    return await _case_call(info, work)


async def transition_case_mutation(info: Info, input: TransitionCaseInput) -> CasePayload:
    case_id = int_id(input.case_id, "ServiceCase")
    r = input.resolution
    step = Step(
        to=input.to, note=input.note, explanation=input.explanation, department=input.department, cause=input.cause,
        responsible_party=input.responsible_party, reason=input.reason, summary=input.summary,
        customer_feedback=input.customer_feedback,
        resolution=Resolution(kind=r.kind, compensation_fen=r.compensation_fen, points=r.points, note=r.note) if r else None,
    )  # fmt: skip
    p = info.context.principal

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        return await cases.transition_case(conn, get_config(), case_id, step, actor=p.actor, role=p.role,
                                           now=datetime.now(UTC), key=input.idempotency_key)  # fmt: skip

    return await _case_call(info, work)


async def assign_case_mutation(info: Info, input: AssignCaseInput) -> CasePayload:
    case_id = int_id(input.case_id, "ServiceCase")
    actor = info.context.principal.actor

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        return await cases.assign_case(conn, get_config(), case_id, assignee=input.assignee,
                                       department=input.department, actor=actor, now=datetime.now(UTC))  # fmt: skip

    return await _case_call(info, work)


@strawberry.type
class Query:
    case: ServiceCase | None = strawberry.field(
        resolver=resolve_case, description="A service case with its events (a member: only their own)."
    )
    case_queue: Connection[ServiceCase] = strawberry.field(
        resolver=resolve_case_queue, permission_classes=[IsStaff],
        description="Cases by SLA time left, most urgent first; open cases unless a status is given.",
    )  # fmt: skip
    service_stats: list[ServiceStatsRow] = strawberry.field(
        resolver=resolve_service_stats, permission_classes=[IsStaff],
        description="Volume, response and resolution times, breach and reopen rates, outcomes, by a dimension.",
    )  # fmt: skip
    satisfaction_stats: list[SatisfactionStatsRow] = strawberry.field(
        resolver=resolve_satisfaction_stats, permission_classes=[IsStaff],
        description="CSAT, NPS, satisfaction index and response rate, by a dimension.",
    )  # fmt: skip
    survey_definitions: list[SurveyDefinition] = strawberry.field(
        resolver=resolve_survey_definitions,
        description="The configured surveys with their questions and scales.",
    )


@strawberry.type
class Mutation:
    open_case: CasePayload = strawberry.field(
        resolver=open_case_mutation, description="Open a case (staff, service, or a member for themselves)."
    )
    transition_case: CasePayload = strawberry.field(
        resolver=transition_case_mutation, permission_classes=[IsStaff],
        description="Move a case one step on its flow; an illegal target is a userError naming the allowed ones.",
    )  # fmt: skip
    assign_case: CasePayload = strawberry.field(
        resolver=assign_case_mutation, permission_classes=[IsStaff],
        description="Give a case an owner and/or a department.",
    )  # fmt: skip
    submit_survey: SurveyPayload = strawberry.field(
        resolver=submit_survey_mutation,
        description="Answer a survey (a member about their own order or case), once per survey and subject.",
    )
    record_feedback: FeedbackPayload = strawberry.field(
        resolver=record_feedback_mutation,
        description="Record feedback from any channel; it is classified, and high-priority negative opens a case.",
    )
    classify_feedback: FeedbackPayload = strawberry.field(
        resolver=classify_feedback_mutation, permission_classes=[IsStaff],
        description="Override the classification; set status and owner.",
    )  # fmt: skip


__all__ = ["Mutation", "Query", "ServiceFields", "validate_rules"]
