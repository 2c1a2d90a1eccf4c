"""service and care: case state machines with SLAs, surveys with expected/perceived scores, feedback, care outbox

Revision ID: 0012
Revises: 0015
Create Date: 2026-12-04 06:27:00

Why: the service-case, case-event and survey-response tables existed with no rule driving them. A case now
moves through its type's configured state machine (crm.service), so the status check constraint goes: the
statuses are the configuration's (the eight complaint steps, shorter flows for other types). Each case keeps
what each step recorded (department, cause, resolution, approval, grants), both SLA deadlines with their
breaches, and `sla_due_at` as the next deadline still running, which the queue orders by. Survey responses
get their survey, expected and perceived scores and one answer per subject. Feedback (classified by need and
priority) and the care outbox (one action per customer, kind and period; suppressions say why) are new.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "care_action",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("period", sqlmodel.sql.sqltypes.AutoString(length=48), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("purpose", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("suppressed_reason", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("due_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("rule_version", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(state = 'suppressed') = (suppressed_reason is not null)",
            name="ck_care_action_suppressed_reason",
        ),
        sa.CheckConstraint("purpose in ('marketing', 'service')", name="ck_care_action_purpose"),
        sa.CheckConstraint(
            "state in ('pending', 'claimed', 'delivered', 'failed', 'suppressed')",
            name="ck_care_action_state",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["golden_customer.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("customer_id", "kind", "period", name="uq_care_action_period"),
    )
    op.create_index("ix_care_action_claimable", "care_action", ["state", "due_at"], unique=False)
    op.create_index(
        "ix_care_action_customer_created",
        "care_action",
        ["customer_id", sa.literal_column("created_at desc")],
        unique=False,
    )
    op.create_index("ix_care_action_kind_state", "care_action", ["kind", "state"], unique=False)
    op.create_table(
        "feedback",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_code", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("body", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("need_type", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("priority", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("sentiment", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column(
            "keywords",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("classified_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=12), nullable=False),
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("order_id", sa.BigInteger(), nullable=True),
        sa.Column("case_id", sa.BigInteger(), nullable=True),
        sa.Column("survey_response_id", sa.BigInteger(), nullable=True),
        sa.Column("rule_version", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("priority in ('high', 'medium', 'low')", name="ck_feedback_priority"),
        sa.CheckConstraint("sentiment in ('negative', 'neutral', 'positive')", name="ck_feedback_sentiment"),
        sa.CheckConstraint(
            "status in ('new', 'acknowledged', 'acted_on', 'closed')", name="ck_feedback_status"
        ),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["service_case.id"],
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["golden_customer.id"],
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
        ),
        sa.ForeignKeyConstraint(
            ["survey_response_id"],
            ["survey_response.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_feedback_customer_created",
        "feedback",
        ["customer_id", sa.literal_column("created_at desc")],
        unique=False,
    )
    op.create_index("ix_feedback_open", "feedback", ["status", "priority", "created_at"], unique=False)
    op.add_column(
        "case_event", sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True)
    )
    op.add_column(
        "case_event",
        sa.Column(
            "detail",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column(
        "case_event", sa.Column("rule_version", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
    )
    op.add_column("service_case", sa.Column("order_line_no", sa.Integer(), nullable=True))
    op.add_column("service_case", sa.Column("store_id", sa.BigInteger(), nullable=True))
    op.add_column("service_case", sa.Column("product_id", sa.BigInteger(), nullable=True))
    op.add_column(
        "service_case",
        sa.Column("source", sa.String(length=16), server_default="service_desk", nullable=False),
    )
    op.add_column("service_case", sa.Column("request", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column(
        "service_case", sa.Column("assignee", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True)
    )
    op.add_column("service_case", sa.Column("explanation", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column("service_case", sa.Column("cause", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column(
        "service_case",
        sa.Column("responsible_party", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    )
    op.add_column(
        "service_case", sa.Column("resolution", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.add_column(
        "service_case",
        sa.Column("compensation_fen", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "service_case", sa.Column("points_granted", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column("service_case", sa.Column("coupon_id", sa.BigInteger(), nullable=True))
    op.add_column(
        "service_case", sa.Column("approved_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True)
    )
    op.add_column("service_case", sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("service_case", sa.Column("executed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("service_case", sa.Column("summary", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column(
        "service_case", sa.Column("customer_feedback", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
    )
    op.add_column(
        "service_case", sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
    )
    op.add_column(
        "service_case", sa.Column("reopen_count", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column(
        "service_case", sa.Column("sla_clock", sa.String(length=8), server_default="calendar", nullable=False)
    )
    op.add_column(
        "service_case", sa.Column("first_response_due_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("service_case", sa.Column("resolve_due_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "service_case", sa.Column("first_response_breached_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("service_case", sa.Column("resolve_breached_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "service_case", sa.Column("opened_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True)
    )
    op.add_column(
        "service_case", sa.Column("rule_version", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
    )
    op.add_column("service_case", sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "service_case",
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_index("ix_service_case_opened", "service_case", ["opened_at"], unique=False)
    op.create_foreign_key("fk_service_case_coupon", "service_case", "coupon", ["coupon_id"], ["id"])
    op.create_foreign_key("fk_service_case_store", "service_case", "store", ["store_id"], ["id"])
    op.create_foreign_key("fk_service_case_product", "service_case", "product", ["product_id"], ["id"])
    op.drop_constraint("ck_service_case_status", "service_case", type_="check")
    op.create_check_constraint(
        "ck_service_case_grants", "service_case", "compensation_fen >= 0 and points_granted >= 0"
    )
    op.add_column("survey_response", sa.Column("store_id", sa.BigInteger(), nullable=True))
    op.add_column(
        "survey_response",
        sa.Column("survey_code", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    )
    op.add_column(
        "survey_response",
        sa.Column("subject_key", sqlmodel.sql.sqltypes.AutoString(length=48), nullable=True),
    )
    op.add_column("survey_response", sa.Column("expected_score", sa.Integer(), nullable=True))
    op.add_column("survey_response", sa.Column("perceived_score", sa.Integer(), nullable=True))
    op.add_column(
        "survey_response",
        sa.Column(
            "answers",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column(
        "survey_response",
        sa.Column("submitted_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    )
    op.create_index("ix_survey_response_responded", "survey_response", ["responded_at"], unique=False)
    op.create_unique_constraint(
        "uq_survey_response_subject", "survey_response", ["survey_code", "customer_id", "subject_key"]
    )
    op.create_foreign_key("fk_survey_response_store", "survey_response", "store", ["store_id"], ["id"])
    op.create_check_constraint(
        "ck_survey_response_expected_positive",
        "survey_response",
        "expected_score is null or expected_score > 0",
    )


def downgrade() -> None:
    op.drop_constraint("ck_survey_response_expected_positive", "survey_response", type_="check")
    op.drop_constraint("uq_survey_response_subject", "survey_response", type_="unique")
    op.drop_index("ix_survey_response_responded", table_name="survey_response")
    op.drop_column("survey_response", "submitted_by")
    op.drop_column("survey_response", "answers")
    op.drop_column("survey_response", "perceived_score")
    op.drop_column("survey_response", "expected_score")
    op.drop_column("survey_response", "subject_key")
    op.drop_column("survey_response", "survey_code")
    op.drop_column("survey_response", "store_id")
    op.drop_constraint("ck_service_case_grants", "service_case", type_="check")
    op.drop_index("ix_service_case_opened", table_name="service_case")
    op.drop_column("service_case", "updated_at")
    op.drop_column("service_case", "closed_at")
    op.drop_column("service_case", "rule_version")
    op.drop_column("service_case", "opened_by")
    op.drop_column("service_case", "resolve_breached_at")
    op.drop_column("service_case", "first_response_breached_at")
    op.drop_column("service_case", "resolve_due_at")
    op.drop_column("service_case", "first_response_due_at")
    op.drop_column("service_case", "sla_clock")
    op.drop_column("service_case", "reopen_count")
    op.drop_column("service_case", "outcome")
    op.drop_column("service_case", "customer_feedback")
    op.drop_column("service_case", "summary")
    op.drop_column("service_case", "executed_at")
    op.drop_column("service_case", "approved_at")
    op.drop_column("service_case", "approved_by")
    op.drop_column("service_case", "coupon_id")
    op.drop_column("service_case", "points_granted")
    op.drop_column("service_case", "compensation_fen")
    op.drop_column("service_case", "resolution")
    op.drop_column("service_case", "responsible_party")
    op.drop_column("service_case", "cause")
    op.drop_column("service_case", "explanation")
    op.drop_column("service_case", "assignee")
    op.drop_column("service_case", "request")
    op.drop_column("service_case", "source")
    op.drop_column("service_case", "product_id")
    op.drop_column("service_case", "store_id")
    op.drop_column("service_case", "order_line_no")
    # Statuses of other flows cannot satisfy the old list: they fall back to 'open' on the way down.
    op.execute(
        "update service_case set status = 'open' where status not in ('open', 'in_progress', 'pending_customer', 'resolved', 'closed')"
    )
    op.create_check_constraint(
        "ck_service_case_status",
        "service_case",
        "status in ('open', 'in_progress', 'pending_customer', 'resolved', 'closed')",
    )
    op.drop_column("case_event", "rule_version")
    op.drop_column("case_event", "detail")
    op.drop_column("case_event", "action")
    op.drop_index("ix_feedback_open", table_name="feedback")
    op.drop_index("ix_feedback_customer_created", table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_care_action_kind_state", table_name="care_action")
    op.drop_index("ix_care_action_customer_created", table_name="care_action")
    op.drop_index("ix_care_action_claimable", table_name="care_action")
    op.drop_table("care_action")
