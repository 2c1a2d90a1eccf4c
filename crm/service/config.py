"""The service and care rules, read from one TOML file (C360_SERVICE_CONFIG) and validated at start.

A bad file fails naming the key that is wrong (`types.complaint.transitions[3].to: ...`), never with a rule
silently falling back to a default.
"""

from __future__ import annotations

from datetime import date, time
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crm.rules_file import load_rules
from infra.settings import get_settings

PRIORITIES = ("low", "normal", "high", "urgent")
# The input fields a transition may require (transitionCase's input names them in camelCase).
StepField = Literal[
    "explanation", "department", "cause", "responsible_party", "resolution", "reason", "summary"
]
STEP_FIELDS: tuple[str, ...] = get_args(StepField)
RESOLUTION_KINDS = ("return", "exchange", "repair", "discount", "compensation", "explanation")
CARE_KINDS = (
    "birthday",
    "points_expiring",
    "case_followup",
    "purchase_followup",
    "regular_visit",
    "tier_change",
    "winback",
    "survey_invite",
    "case_update",
)
CHANNELS = ("sms", "wechat_template", "app_push", "call_list")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BusinessHours(Strict):
    weekdays: list[int] = Field([1, 2, 3, 4, 5], min_length=1)
    start: time = time(9)
    end: time = time(18)
    holidays: list[date] = []

    @model_validator(mode="after")
    def _sane(self) -> BusinessHours:
        if any(d < 1 or d > 7 for d in self.weekdays):
            raise ValueError("weekdays are ISO weekdays, 1 (Monday) to 7")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


Clock = Literal["calendar", "business"]


class SlaTarget(Strict):
    first_response_hours: float = Field(24, gt=0, le=24 * 365)
    resolve_hours: float = Field(72, gt=0, le=24 * 365)
    clock: Clock = "calendar"


class SlaRule(Strict):
    type: str
    priority: Literal["low", "normal", "high", "urgent"] | None = None
    first_response_hours: float = Field(gt=0, le=24 * 365)
    resolve_hours: float = Field(gt=0, le=24 * 365)
    clock: Clock | None = None


class Sla(Strict):
    default: SlaTarget = SlaTarget()
    rules: list[SlaRule] = []


class Transition(Strict):
    from_: str = Field(alias="from")
    to: str
    name: str = Field(min_length=1, max_length=100)
    requires: list[StepField] = []
    role: Literal["staff", "staff_admin"] = "staff"
    execute: bool = False
    invalid: bool = False
    reopen: bool = False


class CaseType(Strict):
    name: str
    initial: str = Field(min_length=1, max_length=16)
    final: list[str] = Field(min_length=1)
    transitions: list[Transition] = Field(min_length=1)

    @model_validator(mode="after")
    def _connected(self) -> CaseType:
        states = (
            {self.initial, *self.final}
            | {t.from_ for t in self.transitions}
            | {t.to for t in self.transitions}
        )
        if any(len(s) > 16 or not s.isidentifier() for s in states):
            raise ValueError("statuses are identifiers of at most 16 characters")
        pairs = [(t.from_, t.to) for t in self.transitions]
        if len(set(pairs)) != len(pairs):
            raise ValueError("each (from, to) pair may appear once")
        reachable, frontier = {self.initial}, [self.initial]
        while frontier:
            here = frontier.pop()
            for t in self.transitions:
                if t.from_ == here and t.to not in reachable:
                    reachable.add(t.to)
                    frontier.append(t.to)
        if unreachable := sorted(states - reachable):
            raise ValueError(f"statuses {unreachable} cannot be reached from {self.initial!r}")
        if not set(self.final) & reachable:
            raise ValueError("no final status is reachable")
        return self

    def allowed_from(self, status: str) -> list[Transition]:
        return [t for t in self.transitions if t.from_ == status]

    def statuses(self) -> list[str]:
        seen = [self.initial]
        for t in self.transitions:
            for s in (t.from_, t.to):
                if s not in seen:
                    seen.append(s)
        return seen


class Compensation(Strict):
    coupon_valid_days: int = Field(90, ge=1, le=3650)
    max_fen: int = Field(500_000, ge=0)
    max_points: int = Field(50_000, ge=0)


class Question(Strict):
    code: str = Field(min_length=1, max_length=32)
    text: str
    min: int = Field(ge=0)
    max: int = Field(le=100)


class Survey(Strict):
    code: str = Field(min_length=1, max_length=32)
    name: str
    kind: Literal["csat", "nps"]
    trigger: Literal["case_closed", "order_delivered", "manual"] = "manual"
    expected_perceived: bool = False
    questions: list[Question] = Field(min_length=1)

    @model_validator(mode="after")
    def _questions(self) -> Survey:
        codes = [q.code for q in self.questions]
        if len(set(codes)) != len(codes):
            raise ValueError("question codes must be unique")
        if self.expected_perceived and not {"expected", "perceived"} <= set(codes):
            raise ValueError("expected_perceived needs questions coded 'expected' and 'perceived'")
        return self


class NeedRule(Strict):
    need: str
    keywords: list[str] = Field(min_length=1)


class PriorityRule(Strict):
    priority: Literal["high", "medium", "low"]
    keywords: list[str] = Field(min_length=1)


class Feedback(Strict):
    need_types: list[str] = Field(["functional", "emotional", "social"], min_length=1)
    default_need: str = "functional"
    default_priority: Literal["high", "medium", "low"] = "low"
    negative_words: list[str] = []
    positive_words: list[str] = []
    open_case_priority: Literal["high", "medium", "low"] | None = "high"
    needs: list[NeedRule] = []
    priorities: list[PriorityRule] = []

    @model_validator(mode="after")
    def _known(self) -> Feedback:
        if self.default_need not in self.need_types:
            raise ValueError(f"default_need {self.default_need!r} is not one of need_types")
        for rule in self.needs:
            if rule.need not in self.need_types:
                raise ValueError(f"needs: {rule.need!r} is not one of need_types {self.need_types}")
        return self


class CareKind(Strict):
    enabled: bool = False
    channel: Literal["sms", "wechat_template", "app_push", "call_list"] = "sms"
    purpose: Literal["marketing", "service"] = "service"
    days_ahead: int = Field(30, ge=1, le=365)
    min_points: int = Field(1, ge=1)
    delay_days: int = Field(3, ge=0, le=365)
    min_paid_yuan: int = Field(0, ge=0)
    interval_days: int = Field(90, ge=1, le=3650)
    tiers: list[str] = []
    stage: str = "at_risk"


class CareConsent(Strict):
    marketing: dict[str, str] = {}
    service_opt_out: str = "service_contact"

    @model_validator(mode="after")
    def _channels(self) -> CareConsent:
        if unknown := sorted(set(self.marketing) - set(CHANNELS)):
            raise ValueError(f"unknown channels {unknown} (known: {', '.join(CHANNELS)})")
        return self


class Lease(Strict):
    seconds: int = Field(300, ge=5, le=86_400)
    max_attempts: int = Field(5, ge=1, le=100)


class Care(Strict):
    consent: CareConsent = CareConsent()
    lease: Lease = Lease()
    birthday: CareKind = CareKind()
    points_expiring: CareKind = CareKind()
    case_followup: CareKind = CareKind()
    purchase_followup: CareKind = CareKind()
    regular_visit: CareKind = CareKind()
    tier_change: CareKind = CareKind()
    winback: CareKind = CareKind()
    survey_invite: CareKind = CareKind()
    case_update: CareKind = CareKind()

    def kind(self, name: str) -> CareKind:
        found: CareKind = getattr(self, name)
        return found

    @model_validator(mode="after")
    def _marketing_has_consent(self) -> Care:
        for name in CARE_KINDS:
            k = self.kind(name)
            if k.enabled and k.purpose == "marketing" and k.channel not in self.consent.marketing:
                raise ValueError(
                    f"{name}: a marketing action on {k.channel} needs care.consent.marketing.{k.channel}"
                )
        return self


class ServiceConfig(Strict):
    version: str = Field(min_length=1, max_length=32)
    timezone: str = "Asia/Shanghai"
    sources: list[str] = Field(min_length=1)
    departments: list[str] = Field(min_length=1)
    business_hours: BusinessHours = BusinessHours()
    sla: Sla = Sla()
    types: dict[str, CaseType] = Field(min_length=1)
    compensation: Compensation = Compensation()
    surveys: list[Survey] = []
    feedback: Feedback = Feedback()
    care: Care = Care()

    @model_validator(mode="after")
    def _references(self) -> ServiceConfig:
        try:
            ZoneInfo(self.timezone)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"timezone {self.timezone!r} is not an IANA zone") from exc
        for rule in self.sla.rules:
            if rule.type not in self.types:
                raise ValueError(f"sla.rules: type {rule.type!r} is not one of types {sorted(self.types)}")
        if "complaint" not in self.types:
            raise ValueError("types.complaint is required: feedback opens complaints")
        codes = [s.code for s in self.surveys]
        if len(set(codes)) != len(codes):
            raise ValueError("survey codes must be unique")
        if any(len(t) > 32 for t in self.types):
            raise ValueError("type codes are at most 32 characters")
        return self

    def case_type(self, code: str) -> CaseType | None:
        return self.types.get(code)

    def sla_for(self, type_code: str, priority: str) -> SlaTarget:
        """The most specific SLA: type and priority, then type, then the default."""
        d = self.sla.default
        for wanted in (priority, None):
            for rule in self.sla.rules:
                if rule.type == type_code and rule.priority == wanted:
                    return SlaTarget(
                        first_response_hours=rule.first_response_hours,
                        resolve_hours=rule.resolve_hours,
                        clock=rule.clock or d.clock,
                    )
        return d

    def survey(self, code: str) -> Survey | None:
        return next((s for s in self.surveys if s.code == code), None)


class ServiceConfigError(ValueError):
    """The service file is missing or invalid; the message names the file and the key."""


def load_config(path: Path) -> ServiceConfig:
    return load_rules(path, ServiceConfig, ServiceConfigError, "service", "C360_SERVICE_CONFIG")


@lru_cache(maxsize=1)
def get_config() -> ServiceConfig:
    """The configured rules (read once per process)."""
    return load_config(get_settings().service_config)
