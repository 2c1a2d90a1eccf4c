"""check the references to channel and product once per statement, not once per row

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 09:00:00

Why: every landed order names its channel and most of its lines name a product, and a foreign key checks
each row on its own: one SPI query per row, with an executor started and a FOR KEY SHARE lock taken on the
same few hot rows ('tmall', the best sellers), which two landing writers then share through a MultiXact.
Those two keys cost PostgreSQL 18-25 us of its 65-85 us per landed Tmall order (`bench/sync_ingest.py`,
200k orders, two writers). Here the same rule is checked per statement: an AFTER INSERT trigger with a
transition table takes FOR KEY SHARE on the distinct keys the statement wrote and fails the statement if
one is missing; a row trigger checks an update that changes the key. The referenced side is guarded too:
deleting or re-keying a channel or product that is still referenced fails, and so does a TRUNCATE that
leaves references behind. Errors are foreign_key_violation (23503) with the check's name, like a key's.

What a foreign key gives that these checks keep: a concurrent delete of the referenced row waits for the
inserting transaction (the delete's row lock conflicts with FOR KEY SHARE) and then sees its rows. What
they give up: under REPEATABLE READ or SERIALIZABLE, the delete side's check would read its own snapshot
and miss references committed after it, so deleting or re-keying referenced rows is refused there (do it
in READ COMMITTED). The entity keys (orders -> source_identity, order_line -> orders) stay foreign keys.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (check name, referencing table, column, referenced table, column): the keys this migration replaces.
REFERENCES = (
    ("orders_channel_code_fkey", "orders", "channel_code", "channel", "code"),
    ("order_line_product_id_fkey", "order_line", "product_id", "product", "id"),
)

CHECK_REFERENCE = r"""
create function check_reference() returns trigger language plpgsql as $fn$
-- The referencing side. As a statement trigger after INSERT (transition table `inserted`): lock the distinct
-- keys the statement wrote FOR KEY SHARE, as a foreign key does row by row, and fail if one is missing. As a
-- row trigger after an UPDATE that changed the key: the same for that row.
-- tg_argv: check name, referencing column, referenced table, referenced column.
declare
    missing text;
begin
    if tg_level = 'STATEMENT' then
        execute format(
            'with keys as materialized (select distinct n.%1$I as k from inserted n where n.%1$I is not null), '
            'present as materialized (select r.%3$I as k from %2$I r where r.%3$I in (select k from keys) '
            'for key share of r) '
            'select k::text from (select k from keys except select k from present) m limit 1',
            tg_argv[1], tg_argv[2], tg_argv[3]) into missing;
    else
        execute format(
            'select ($1).%1$I::text where ($1).%1$I is not null and not exists '
            '(select from (select r.%3$I from %2$I r where r.%3$I = ($1).%1$I for key share of r) present)',
            tg_argv[1], tg_argv[2], tg_argv[3]) using new into missing;
    end if;
    if missing is not null then
        raise exception 'insert or update on table "%" violates foreign key "%"', tg_table_name, tg_argv[0]
            using errcode = 'foreign_key_violation', constraint = tg_argv[0], table = tg_table_name,
                  column = tg_argv[1],
                  detail = format('Key (%s)=(%s) is not present in table "%s".', tg_argv[1], missing, tg_argv[2]);
    end if;
    return null;
end
$fn$
"""

PROTECT_REFERENCED = r"""
create function protect_referenced() returns trigger language plpgsql as $fn$
-- The referenced side. Row trigger before DELETE or UPDATE: the row is locked by then (waiting for any
-- transaction that holds it FOR KEY SHARE), and READ COMMITTED reads what those committed. Statement trigger
-- after TRUNCATE: the referencing table must be empty (truncated with it, or already).
-- tg_argv: check name, referencing table, referencing column, referenced column.
declare
    referenced boolean;
begin
    if tg_op = 'TRUNCATE' then
        execute format('select exists (select from %I)', tg_argv[1]) into referenced;
        if referenced then
            raise exception 'cannot truncate table "%" while table "%" refers to it', tg_table_name, tg_argv[1]
                using errcode = 'foreign_key_violation', constraint = tg_argv[0],
                      hint = format('Truncate "%s" in the same command, or use CASCADE.', tg_argv[1]);
        end if;
        return null;
    end if;
    if tg_op = 'UPDATE' then
        execute format('select ($1).%1$I is not distinct from ($2).%1$I', tg_argv[3]) using old, new into referenced;
        if referenced then
            return new;  -- the key did not change
        end if;
    end if;
    execute format('select exists (select from %1$I x where x.%2$I = ($1).%3$I)', tg_argv[1], tg_argv[2], tg_argv[3])
        using old into referenced;
    if referenced then
        raise exception 'update or delete on table "%" violates foreign key "%" on table "%"',
                tg_table_name, tg_argv[0], tg_argv[1]
            using errcode = 'foreign_key_violation', constraint = tg_argv[0], table = tg_argv[1],
                  detail = format('Key (%s)=(%s) is still referenced from table "%s".',
                                  tg_argv[3], row_to_json(old) ->> tg_argv[3], tg_argv[1]);
    end if;
    if current_setting('transaction_isolation') <> 'read committed' then
        -- This transaction's snapshot may miss references committed since it began.
        raise exception 'delete or re-key rows of "%" in a READ COMMITTED transaction', tg_table_name
            using errcode = 'object_not_in_prerequisite_state', constraint = tg_argv[0],
                  hint = 'Under REPEATABLE READ or SERIALIZABLE the reference check cannot see rows committed '
                         'after the transaction began.';
    end if;
    return case when tg_op = 'DELETE' then old else new end;
end
$fn$
"""


def upgrade() -> None:
    op.execute(CHECK_REFERENCE)
    op.execute(PROTECT_REFERENCED)
    for name, table, column, target, key in REFERENCES:
        op.drop_constraint(name, table, type_="foreignkey")
        args = f"'{name}', '{column}', '{target}', '{key}'"
        op.execute(
            f"create trigger {name}_ins after insert on {table} referencing new table as inserted "
            f"for each statement execute function check_reference({args})"
        )
        op.execute(
            f"create trigger {name}_upd after update of {column} on {table} for each row "
            f"when (old.{column} is distinct from new.{column}) execute function check_reference({args})"
        )
        back = f"'{name}', '{table}', '{column}', '{key}'"
        op.execute(
            f"create trigger {name}_ref before delete or update of {key} on {target} for each row "
            f"execute function protect_referenced({back})"
        )
        op.execute(
            f"create trigger {name}_trunc after truncate on {target} for each statement "
            f"execute function protect_referenced({back})"
        )


def downgrade() -> None:
    for name, table, column, target, key in REFERENCES:
        for suffix, on in (("ins", table), ("upd", table), ("ref", target), ("trunc", target)):
            op.execute(f"drop trigger {name}_{suffix} on {on}")
        op.create_foreign_key(name, table, target, [column], [key])
    op.execute("drop function protect_referenced()")
    op.execute("drop function check_reference()")
