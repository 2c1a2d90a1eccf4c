"""check the references of inserted orders and order lines once per statement, not once per row

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 09:00:00

Why: a foreign key checks each inserted row on its own: one SPI query per row and key, each starting an
executor and taking FOR KEY SHARE on the referenced row, often the same few hot rows ('tmall', best sellers)
that the two landing writers then share through a MultiXact. Landing Tmall orders, those checks were 40% of
PostgreSQL's CPU (`bench/sync_ingest.py`, 200k orders). Here an INSERT is checked per statement by a
trigger with a transition table: the distinct keys the statement wrote are locked FOR KEY SHARE in one
query, and the statement fails if one is missing. An UPDATE is checked row by row, like a foreign key, and
only where it changed the key: a WHEN clause, so a status update costs nothing (a statement trigger would
have copied every updated row twice: +40% on a bulk status update); a bulk change of keys, as linking and
merges make, costs 20-35% more than with a foreign key, a PL/pgSQL row trigger being slower than the C one.
The referenced side is guarded row by row: deleting or re-keying a referenced row fails (an order's lines
are deleted with it, as ON DELETE CASCADE did), and so does a TRUNCATE that leaves references behind.
Errors are foreign_key_violation (23503) with the old key's name.

What a foreign key gives that these checks keep: a concurrent delete of the referenced row waits for the
inserting transaction (its row lock conflicts with FOR KEY SHARE) and then reads what it committed. What
they give up: under REPEATABLE READ or SERIALIZABLE the delete side would read its own snapshot and miss
references committed after it, so deleting or re-keying referenced rows is refused there; do it in READ
COMMITTED. The other tables' foreign keys are unchanged.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, referencing table, column, referenced table, column, on delete): the foreign keys replaced.
REFERENCES = (
    ("orders_channel_code_fkey", "orders", "channel_code", "channel", "code", "restrict"),
    ("orders_source_identity_id_fkey", "orders", "source_identity_id", "source_identity", "id", "restrict"),
    ("orders_customer_id_fkey", "orders", "customer_id", "golden_customer", "id", "restrict"),
    ("orders_store_id_fkey", "orders", "store_id", "store", "id", "restrict"),
    ("order_line_order_id_fkey", "order_line", "order_id", "orders", "id", "cascade"),
    ("order_line_product_id_fkey", "order_line", "product_id", "product", "id", "restrict"),
)

CHECK_INSERTED = r"""
create function check_inserted_references() returns trigger language plpgsql as $fn$
-- The referencing side after INSERT, a statement trigger (transition table `inserted`): every key the
-- statement wrote must be in the referenced table; those rows are locked FOR KEY SHARE, as a foreign key
-- locks them row by row. tg_argv: name, referencing column, referenced table, referenced column.
declare
    missing text;
begin
    execute format(
        'with keys as materialized (select distinct n.%1$I as k from inserted n where n.%1$I is not null), '
        'present as materialized (select r.%3$I as k from %2$I r where r.%3$I in (select k from keys) '
        'for key share of r) '
        'select k::text from (select k from keys except select k from present) m limit 1',
        tg_argv[1], tg_argv[2], tg_argv[3]) into missing;
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

# The referencing side after an UPDATE that changed the key: one function per reference, with static SQL so
# that its plan is cached (merges and customer-id propagation change many rows in one statement).
CHECK_UPDATED = r"""
create function {name}_upd() returns trigger language plpgsql as $fn$
begin
    perform from {target} r where r.{key} = new.{column} for key share of r;
    if not found then
        raise exception 'insert or update on table "{table}" violates foreign key "{name}"'
            using errcode = 'foreign_key_violation', constraint = '{name}', table = '{table}', column = '{column}',
                  detail = format('Key ({column})=(%s) is not present in table "{target}".', new.{column});
    end if;
    return null;
end
$fn$
"""

PROTECT_REFERENCED = r"""
create function protect_referenced() returns trigger language plpgsql as $fn$
-- The referenced side. Row trigger before DELETE or UPDATE: the row is locked by then (waiting for any
-- transaction that holds it FOR KEY SHARE), and READ COMMITTED reads what those committed; a delete fails
-- while rows refer to it, or (on delete 'cascade') deletes them. Statement trigger after TRUNCATE: the
-- referencing table must be empty (truncated in the same command, or already).
-- tg_argv: name, referencing table, referencing column, referenced column, on delete.
declare
    referenced boolean;
begin
    if tg_op = 'TRUNCATE' then
        execute format('select exists (select from %I)', tg_argv[1]) into referenced;
        if referenced then
            raise exception 'cannot truncate table "%" while table "%" refers to it', tg_table_name, tg_argv[1]
                using errcode = 'foreign_key_violation', constraint = tg_argv[0],
                      hint = format('Truncate "%s" in the same command.', tg_argv[1]);
        end if;
        return null;
    end if;
    if tg_op = 'UPDATE' then
        execute format('select ($1).%1$I is not distinct from ($2).%1$I', tg_argv[3]) using old, new into referenced;
        if referenced then
            return new;  -- the key did not change
        end if;
    end if;
    if current_setting('transaction_isolation') <> 'read committed' then
        -- This transaction's snapshot may miss references committed since it began.
        raise exception 'delete or re-key rows of "%" in a READ COMMITTED transaction', tg_table_name
            using errcode = 'object_not_in_prerequisite_state', constraint = tg_argv[0],
                  hint = 'Under REPEATABLE READ or SERIALIZABLE the reference check cannot see rows committed '
                         'after the transaction began.';
    end if;
    if tg_op = 'DELETE' and tg_argv[4] = 'cascade' then
        execute format('delete from %1$I x where x.%2$I = ($1).%3$I', tg_argv[1], tg_argv[2], tg_argv[3]) using old;
        return old;
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
    return case when tg_op = 'DELETE' then old else new end;
end
$fn$
"""


def upgrade() -> None:
    op.execute(CHECK_INSERTED)
    op.execute(PROTECT_REFERENCED)
    for name, table, column, target, key, on_delete in REFERENCES:
        op.drop_constraint(name, table, type_="foreignkey")
        op.execute(CHECK_UPDATED.format(name=name, table=table, column=column, target=target, key=key))
        op.execute(
            f"create trigger {name}_ins after insert on {table} referencing new table as inserted "
            f"for each statement execute function check_inserted_references('{name}', '{column}', '{target}', "
            f"'{key}')"
        )
        op.execute(
            f"create trigger {name}_upd after update of {column} on {table} for each row "
            f"when (new.{column} is not null and new.{column} is distinct from old.{column}) "
            f"execute function {name}_upd()"
        )
        back = f"'{name}', '{table}', '{column}', '{key}', '{on_delete}'"
        op.execute(
            f"create trigger {name}_ref before delete or update of {key} on {target} for each row "
            f"execute function protect_referenced({back})"
        )
        op.execute(
            f"create trigger {name}_trunc after truncate on {target} for each statement "
            f"execute function protect_referenced({back})"
        )


def downgrade() -> None:
    for name, table, column, target, key, on_delete in REFERENCES:
        for suffix, on in (("ins", table), ("upd", table), ("ref", target), ("trunc", target)):
            op.execute(f"drop trigger {name}_{suffix} on {on}")
        op.execute(f"drop function {name}_upd()")
        op.create_foreign_key(
            name, table, target, [column], [key], ondelete="CASCADE" if on_delete == "cascade" else None
        )
    op.execute("drop function protect_referenced()")
    op.execute("drop function check_inserted_references()")
