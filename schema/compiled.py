"""The compiled read path: a validated query over the customer graph becomes one SQL statement that builds
the exact response JSON, and the API returns PostgreSQL's text without walking the result in Python.

Why: completing a result field by field in graphql-core and Strawberry's wrappers costs ~80 % of the CPU
of a customer-360 request, however few statements it runs (docs/api.md, "The compiled read path"). The
Strawberry schema stays the single source of truth: a document is parsed and validated against it, with
the same limits, before it is compiled; anything the compiler does not know (a CRM field, an error to
report, an unmasked PII read that must be audited) goes to the ordinary executor instead. Masking, merge
following and member scoping are the same rules as schema.masking / schema.customer, written in SQL; the
test suite runs every query through both paths and requires identical answers (C360_API_COMPILED=verify).

Every value is a bound parameter; the SQL text is made of fixed fragments and the document's response
keys, which are GraphQL names (validated, `[_A-Za-z][_0-9A-Za-z]*`) written as SQL string literals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLIncludeDirective,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    parse,
    specified_rules,
    validate,
)
from graphql.execution.values import get_argument_values, get_directive_values, get_variable_values
from strawberry.types.base import StrawberryList, StrawberryOptional, has_object_definition
from strawberry.utils.str_converters import to_camel_case

from api.auth import PII_READ, Principal
from schema.customer import ATTRIBUTES as CUSTOMER_ATTRIBUTES
from schema.customer import IdentifierKind, identifier_key, identifier_lookups
from schema.errors import BadInput
from schema.loaders import INTERACTION_FILTERS, ORDER_FILTERS
from schema.masking import PII_FIELDS
from schema.permissions import STAFF_OR_SERVICE
from schema.relay import decode_cursor, int_id, page_size, time_keyset
from schema.search import Compiler, CustomerFilter, _mentions_status

Json = str  # a SQL expression that yields json


class Fallback(Exception):
    """This request goes to the ordinary executor (it needs Python, or it has an error to report)."""


# The fields the compiler knows, per GraphQL type; a document that selects any other goes to the executor.
ATTRIBUTE_FIELDS = {"value", "masked", "source", "__typename"}
KNOWN: dict[str, set[str]] = {
    "Query": {"customer", "customerByIdentifier", "me", "customers", "__typename"},
    "Customer": {
        "id", "customerId", "status", "name", "gender", "birthday", "phone", "email", "province", "city",
        "district", "address", "memberNo", "identities", "consents", "orders", "interactions", "orderCount",
        "totalSpent", "firstOrderAt", "lastOrderAt", "mergeHistory", "__typename",
    },
    "MergeEvent": {
        "id", "kind", "actor", "reason", "survivingCustomerId", "absorbedCustomerIds", "evidence", "undone",
        "createdAt", "__typename",
    },
    "Attribute": ATTRIBUTE_FIELDS,
    "AttributeSource": {"channel", "externalId", "updatedAt", "rule", "actor", "__typename"},
    "SourceIdentity": {
        "id", "channel", "externalId", "name", "nickname", "phone", "phoneMasked", "phoneVerified", "email",
        "memberNo", "wechatUnionid", "province", "city", "district", "linkRule", "linkScore", "linkedAt",
        "sourceUpdatedAt", "__typename",
    },
    "Consent": {"purpose", "status", "source", "recordedAt", "__typename"},
    "Order": {
        "id", "channel", "externalId", "status", "sourceStatus", "total", "paid", "discount", "shipping",
        "placedAt", "paidAt", "lines", "refunds", "__typename",
    },
    "OrderLine": {"lineNo", "sku", "title", "quantity", "unitPrice", "discount", "amount", "product", "__typename"},
    "Product": {"id", "sku", "title", "category", "__typename"},
    "Refund": {"id", "channel", "externalId", "lineNo", "amount", "reason", "status", "requestedAt", "__typename"},
    "Interaction": {"id", "channel", "externalId", "type", "direction", "occurredAt", "summary", "__typename"},
    "Money": {"fen", "yuan", "currency", "__typename"},
    "PageInfo": {"hasNextPage", "hasPreviousPage", "startCursor", "endCursor", "__typename"},
    "OrderConnection": {"edges", "pageInfo", "totalCount", "__typename"},
    "OrderEdge": {"cursor", "node", "__typename"},
    "InteractionConnection": {"edges", "pageInfo", "totalCount", "__typename"},
    "InteractionEdge": {"cursor", "node", "__typename"},
    "CustomerConnection": {"edges", "pageInfo", "totalCount", "__typename"},
    "CustomerEdge": {"cursor", "node", "__typename"},
}  # fmt: skip

# GraphQL field -> (golden_customer column, masking field name) of the survivorship attributes.
ATTRIBUTES = {to_camel_case(f): (column, f) for column, f in CUSTOMER_ATTRIBUTES}


# --- SQL fragments mirroring Python's serialization -------------------------------------------------


def iso(ts: str) -> str:
    """datetime.isoformat() of a timestamptz as asyncpg returns it (UTC): microseconds only when set."""
    # One to_char and a replace: a third of the cost of formatting the parts apart.
    return f"(replace(to_char({ts} at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '') || '+00:00')"


def b64url(text: str) -> str:
    """base64url without padding of a text (schema.relay's ids and cursors)."""
    return f"rtrim(translate(encode(convert_to({text}, 'UTF8'), 'base64'), E'+/\\n', '-_'), '=')"


def global_id(type_name: str, pk: str) -> str:
    return b64url(f"'{type_name}:' || {pk}")


def time_cursor(ts: str, pk: str) -> str:
    """encode_cursor([placed_at.isoformat(), id]) as orjson writes it."""
    return b64url(f"'[\"' || {iso(ts)} || '\",' || {pk} || ']'")


def yuan(fen: str) -> str:
    return (
        f"(case when {fen} < 0 then '-' else '' end || div(abs({fen}), 100)::text || '.' || "
        f"lpad((abs({fen}) % 100)::text, 2, '0'))"
    )


def mask_sql(kind: str, v: str) -> str:
    """schema.masking.mask in SQL (the equivalence is tested value by value)."""
    if kind == "phone":
        return (
            f"(case when {v} ~ '^\\+861[0-9]{{10}}$' then substr({v}, 4, 3) || '****' || right({v}, 4) "
            f"when length({v}) > 4 then '****' || right({v}, 4) else '****' end)"
        )
    if kind == "email":
        return (
            f"(case when strpos({v}, '@') > 0 and substr({v}, strpos({v}, '@') + 1) <> '' "
            f"then left(split_part({v}, '@', 1), 1) || '***@' || substr({v}, strpos({v}, '@') + 1) else '***' end)"
        )
    if kind in ("name", "nickname"):
        words = f"regexp_split_to_table(regexp_replace({v}, '^\\s+|\\s+$', '', 'g'), '\\s+')"
        return (
            f"(case when {v} ~ U&'[\\4E00-\\9FFF]' then left({v}, 1) || repeat('*', greatest(length({v}) - 1, 1)) "
            f"when {v} ~ '^\\s*$' then '' else (select string_agg(left(w, 1) || repeat('*', greatest(length(w) - 1, 1)), "
            f"' ' order by n) from {words} with ordinality as t(w, n)) end)"
        )
    if kind == "birthday":
        return f"(left({v}, 4) || '-**-**')"
    if kind == "address":
        return "'***'"
    return v


def literal(key: str) -> str:
    # Response keys are GraphQL names (letters, digits, underscores), validated by the parser.
    if not key.replace("_", "a").isalnum() or not key.isascii():
        raise Fallback(key)
    return f"'{key}'"


def obj(pairs: Iterable[tuple[str, str]]) -> Json:
    items = [f"{literal(k)}, {v}" for k, v in pairs]
    return f"json_build_object({', '.join(items)})" if items else "json_build_object()"


def array(element: Json, rows: str, order: str) -> Json:
    """A JSON array of `element` over `rows` (a FROM clause, with its WHERE), in `order`; [] for none."""
    return f"coalesce((select json_agg({element} order by {order}) from {rows}), '[]'::json)"


# --- the plan ------------------------------------------------------------------------------------------

Fields = dict[str, list[FieldNode]]


@dataclass
class Prepared:
    """A parsed, validated query the compiler knows every field of."""

    document: DocumentNode
    operation: OperationDefinitionNode
    fragments: dict[str, FragmentDefinitionNode]


def prepare(
    schema: GraphQLSchema, query: str, operation_name: str | None, max_tokens: int, rules: list[Any]
) -> Prepared | None:
    """The query ready to compile, or None when the executor must answer it (a parse or validation error,
    which it reports; a mutation or subscription; a field the compiler does not know)."""
    try:
        document = parse(query, max_tokens=max_tokens)
    except GraphQLError:
        return None
    if validate(schema, document, [*specified_rules, *rules]):
        return None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        chosen = operations if len(operations) == 1 else []
    else:
        chosen = [o for o in operations if o.name is not None and o.name.value == operation_name]
    if len(chosen) != 1 or chosen[0].operation is not OperationType.QUERY:
        return None
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    if not _known(schema, "Query", chosen[0].selection_set, fragments):
        return None
    return Prepared(document, chosen[0], fragments)


def _known(
    schema: GraphQLSchema, type_name: str, selection_set: SelectionSetNode, fragments: dict[str, Any]
) -> bool:
    known = KNOWN.get(type_name)
    if known is None:
        return False
    gtype = schema.get_type(type_name)
    assert isinstance(gtype, GraphQLObjectType)
    for sel in selection_set.selections:
        if isinstance(sel, FieldNode):
            name = sel.name.value
            if name not in known:
                return False
            if sel.selection_set is not None:
                child = get_named_type(gtype.fields[name].type).name
                if not _known(schema, child, sel.selection_set, fragments):
                    return False
            continue
        assert isinstance(sel, InlineFragmentNode | FragmentSpreadNode)
        fragment = sel if isinstance(sel, InlineFragmentNode) else fragments[sel.name.value]
        # Fragments on the type itself or on an interface it has (Node); others never apply here.
        condition = fragment.type_condition
        if condition is not None and condition.name.value not in (type_name, "Node"):
            return False
        if not _known(schema, type_name, fragment.selection_set, fragments):
            return False
    return True


@dataclass
class Build:
    """One request's statement: the SQL text and its bound values."""

    schema: GraphQLSchema
    strawberry_schema: Any
    prepared: Prepared
    variables: Any
    principal: Principal
    binds: Compiler = field(default_factory=Compiler)

    # -- selections

    def collect(self, type_name: str, sets: Iterable[SelectionSetNode]) -> Fields:
        out: Fields = {}
        for selection_set in sets:
            self._collect(type_name, selection_set, out)
        return out

    def _collect(self, type_name: str, selection_set: SelectionSetNode, out: Fields) -> None:
        for sel in selection_set.selections:
            if not self._included(sel):
                continue
            if isinstance(sel, FieldNode):
                key = sel.alias.value if sel.alias else sel.name.value
                out.setdefault(key, []).append(sel)
            elif isinstance(sel, InlineFragmentNode):
                self._collect(type_name, sel.selection_set, out)
            elif isinstance(sel, FragmentSpreadNode):
                self._collect(type_name, self.prepared.fragments[sel.name.value].selection_set, out)

    def _included(self, node: Any) -> bool:
        skip = get_directive_values(GraphQLSkipDirective, node, self.variables)
        if skip and skip.get("if") is True:
            return False
        include = get_directive_values(GraphQLIncludeDirective, node, self.variables)
        return not (include and include.get("if") is False)

    def sub(self, type_name: str, nodes: list[FieldNode]) -> Fields:
        return self.collect(type_name, [n.selection_set for n in nodes if n.selection_set is not None])

    def args(self, parent: str, node: FieldNode) -> dict[str, Any]:
        gtype = self.schema.get_type(parent)
        assert isinstance(gtype, GraphQLObjectType)
        return get_argument_values(gtype.fields[node.name.value], node, self.variables)

    def bind(self, value: Any, cast: str) -> str:
        return f"cast({self.binds.bind(value)} as {cast})"

    # -- the operation

    def statement(self) -> tuple[str, dict[str, Any]]:
        fields = self.collect("Query", [self.prepared.operation.selection_set])
        pairs = []
        for key, nodes in fields.items():
            name = nodes[0].name.value
            if name == "__typename":
                pairs.append((key, "'Query'"))
            elif name == "customer":
                pk = self._customer_pk(self.args("Query", nodes[0])["id"])
                pairs.append((key, self.one_customer(pk, nodes)))
            elif name == "customerByIdentifier":
                pairs.append((key, self.one_customer(self.by_identifier(nodes[0]), nodes)))
            elif name == "me":
                if not self.principal.is_member:
                    raise Fallback("me is for member tokens")  # the executor answers FORBIDDEN
                pairs.append((key, self.one_customer(self.principal.member_customer_id, nodes)))
            elif name == "customers":
                if self.principal.role not in STAFF_OR_SERVICE:
                    raise Fallback("customers is for staff and service")
                pairs.append((key, self.search(nodes)))
            else:  # pragma: no cover - prepare() admits only the fields above
                raise Fallback(name)
        return f"select {obj(pairs)}::text", self.binds.params

    @staticmethod
    def _customer_pk(global_id: str) -> int:
        try:
            return int_id(global_id, "Customer")
        except BadInput as exc:
            raise Fallback(str(exc)) from exc

    def by_identifier(self, node: FieldNode) -> str:
        """The customer id of customerByIdentifier's identifier, as schema.customer finds it (SQL)."""
        args = self.args("Query", node)
        try:
            kind, channel, value = identifier_key(IdentifierKind(args["kind"]), args["value"])
        except BadInput as exc:
            raise Fallback(str(exc)) from exc
        lookups = identifier_lookups(kind, self.bind(channel, "text"), self.bind(value, "text"))
        return f"coalesce({', '.join(lookups)})"

    @property
    def member(self) -> int | None:
        return self.principal.member_customer_id

    def one_customer(self, pk: int | str | None, nodes: list[FieldNode]) -> Json:
        """customer(id) / me / customerByIdentifier (`pk` an id, or SQL giving one): merges followed to the
        survivor (at most 8 deep, as load_customer), and for a member token only their own customer."""
        start = pk if isinstance(pk, str) else self.bind(pk, "bigint")
        final = (
            "(with recursive up(id, status, merged_into, depth) as ("
            f"select c.id, c.status, c.merged_into, 0 from golden_customer c where c.id = {start} "
            "union all select c.id, c.status, c.merged_into, up.depth + 1 from up "
            "join golden_customer c on c.id = up.merged_into where up.status = 'merged' and up.depth < 8) "
            "select id from up order by depth desc limit 1)"
        )
        visible = f" and g.id = {self.bind(self.member, 'bigint')}" if self.principal.is_member else ""
        expr, joins = self.customer(self.sub("Customer", nodes), "g")
        return f"(select {expr} from golden_customer g {joins} where g.id = {final}{visible})"

    def search(self, nodes: list[FieldNode]) -> Json:
        """customers(filter, first, after): schema.search's WHERE clause, paged by id."""
        args = self.args("Query", nodes[0])
        if args.get("filter") is not None:
            args["filter"] = to_input(CustomerFilter, args["filter"])
        try:
            n = page_size(args.get("first"))
            f = args.get("filter")
            where = self.binds.compile(f) if f is not None else "true"
            key = decode_cursor(args.get("after"))
        except BadInput as exc:
            raise Fallback(str(exc)) from exc
        if not _mentions_status(f):
            where += " and g.status = 'active'"
        keyset = ""
        if key is not None:
            if len(key) != 1 or not isinstance(key[0], int):
                raise Fallback("not a cursor of this connection")
            keyset = f" and g.id > {self.bind(key[0], 'bigint')}"
        page = f"select g.* from golden_customer g where {where}{keyset} order by g.id limit {self.bind(n + 1, 'int')}"
        total = f"(select count(*) from golden_customer g where {where})"
        cursor = b64url("'[' || g.id || ']'")
        return self.connection(
            "Customer",
            nodes,
            page,
            "g",
            "g.id",
            n,
            args.get("after") is not None,
            total,
            cursor,
            self.customer,
        )

    # -- connections

    def connection(
        self,
        node_type: str,
        nodes: list[FieldNode],
        page_sql: str,
        alias: str,
        order: str,
        n: int,
        has_previous: bool,
        total_sql: str,
        cursor: str,
        node: Callable[[Fields, str], tuple[Json, str]],
    ) -> Json:
        """A Relay connection from a page query fetching first + 1 rows (the extra one says a next page
        exists), as schema.relay.connection builds it."""
        fields = self.sub(f"{node_type}Connection", nodes)
        rn = f"{alias}._rn"
        limit = self.bind(n, "int")
        pairs = []
        for key, fnodes in fields.items():
            name = fnodes[0].name.value
            if name == "__typename":
                pairs.append((key, f"'{node_type}Connection'"))
            elif name == "totalCount":
                pairs.append((key, total_sql))
            elif name == "edges":
                edge_fields = self.sub(f"{node_type}Edge", fnodes)
                edge_pairs, joins = [], ""
                for ekey, enodes in edge_fields.items():
                    ename = enodes[0].name.value
                    if ename == "__typename":
                        edge_pairs.append((ekey, f"'{node_type}Edge'"))
                    elif ename == "cursor":
                        edge_pairs.append((ekey, cursor))
                    else:
                        expr, joins = node(self.sub(node_type, enodes), alias)
                        edge_pairs.append((ekey, expr))
                pairs.append(
                    (
                        key,
                        array(obj(edge_pairs), f"page {alias} {joins} where {rn} <= {limit}", rn),
                    )  # fmt: skip
                )
            elif name == "pageInfo":
                info = []
                for ikey, inodes in self.sub("PageInfo", fnodes).items():
                    iname = inodes[0].name.value
                    if iname == "__typename":
                        info.append((ikey, "'PageInfo'"))
                    elif iname == "hasNextPage":
                        info.append((ikey, f"((select count(*) from page) > {limit})"))
                    elif iname == "hasPreviousPage":
                        info.append((ikey, "true" if has_previous else "false"))
                    elif iname == "startCursor":
                        info.append(
                            (ikey, f"(select {cursor} from page {alias} where {rn} = 1 and {rn} <= {limit})")
                        )
                    elif iname == "endCursor":
                        info.append((ikey, f"(select {cursor} from page {alias} where {rn} = least({limit}, "
                                           "(select count(*) from page)))"))  # fmt: skip
                pairs.append((key, obj(info)))
        numbered = f"select {alias}.*, row_number() over (order by {order}) as _rn from ({page_sql}) {alias}"
        return f"(with page as materialized ({numbered}) select {obj(pairs)})"

    def timeline(
        self,
        node_type: str,
        nodes: list[FieldNode],
        table: str,
        ts: str,
        accepted: tuple[tuple[str, str, str], ...],
        parent: str,
        node: Callable[[Fields, str], tuple[Json, str]],
    ) -> Json:
        """A customer's orders or interactions, newest first (schema.loaders.customer_page_sql)."""
        raw = self.args("Customer", nodes[0])
        try:
            n = page_size(raw.get("first"))
            after = time_keyset(raw.get("after"))
        except BadInput as exc:
            raise Fallback(str(exc)) from exc
        where = [f"x.customer_id = {parent}"]
        given = raw.get("filter") or {}
        for key, condition, param in accepted:  # the loaders' own filters, their values bound here
            value = given.get(to_camel_case(key))
            if value:  # as the loaders: a blank filter value is no filter
                where.append(condition.replace(f":{param}", self.binds.bind(value)))
        cond = " and ".join(where)
        keyset = ""
        if after is not None:
            at = self.bind(datetime.fromisoformat(after[0]), "timestamptz")
            keyset = f" and (x.{ts}, x.id) < ({at}, {self.bind(int(after[1]), 'bigint')})"
        page = f"select x.* from {table} x where {cond}{keyset} order by x.{ts} desc, x.id desc limit {self.bind(n + 1, 'int')}"
        total = f"(select count(*) from {table} x where {cond})"
        return self.connection(
            node_type, nodes, page, "x", f"x.{ts} desc, x.id desc", n, raw.get("after") is not None, total,
            time_cursor(f"x.{ts}", "x.id"), node,
        )  # fmt: skip

    # -- types

    def pii(self, kind: str, value: str, owner: str) -> tuple[str, str]:
        """(value as this caller sees it, masked?): a member sees their own unmasked; staff without
        pii:read see it masked (with pii:read the executor serves the request, to audit the read)."""
        if kind not in PII_FIELDS:
            return value, "false"
        masked = mask_sql(kind, value)
        if self.principal.is_member:
            own = f"{owner} = {self.bind(self.member, 'bigint')}"
            return (f"(case when {value} is null then null when {own} then {value} else {masked} end)",
                    f"({value} is not null and not coalesce({own}, false))")  # fmt: skip
        if PII_READ in self.principal.scopes:
            raise Fallback("unmasked reads are audited by the executor")
        return f"(case when {value} is null then null else {masked} end)", f"({value} is not null)"

    def money(self, nodes: list[FieldNode], fen: str, currency: str) -> Json:
        pairs = []
        for key, fnodes in self.sub("Money", nodes).items():
            name = fnodes[0].name.value
            pairs.append(
                (key, {"fen": fen, "yuan": yuan(fen), "currency": currency, "__typename": "'Money'"}[name])
            )
        return obj(pairs)

    def customer(self, fields: Fields, g: str) -> tuple[Json, str]:
        """A Customer object over golden_customer row `g`, and the lateral joins it needs."""
        pairs, summary = [], False
        figures = {
            "orderCount": "s.order_count",
            "firstOrderAt": f"case when s.first_order_at is null then null else {iso('s.first_order_at')} end",
            "lastOrderAt": f"case when s.last_order_at is null then null else {iso('s.last_order_at')} end",
        }
        for key, nodes in fields.items():
            name = nodes[0].name.value
            if name == "__typename":
                pairs.append((key, "'Customer'"))
            elif name == "id":
                pairs.append((key, global_id("Customer", f"{g}.id")))
            elif name == "customerId":
                pairs.append((key, f"{g}.id"))
            elif name == "status":
                pairs.append((key, f"{g}.status"))
            elif name in ATTRIBUTES:
                pairs.append((key, self.attribute(nodes, g, *ATTRIBUTES[name])))
            elif name in figures:
                summary = True
                pairs.append((key, figures[name]))
            elif name == "totalSpent":
                summary = True
                pairs.append((key, self.money(nodes, "s.total_spent_fen", "'CNY'")))
            elif name == "identities":
                ident, _ = self.identity(self.sub("SourceIdentity", nodes), "si")
                source = f"source_identity si where si.customer_id = {g}.id"
                pairs.append((key, array(ident, source, "si.channel_code, si.id")))
            elif name == "consents":
                pairs.append((key, self.consents(nodes, g)))
            elif name == "mergeHistory":
                pairs.append((key, self.merges(nodes, g)))
            elif name == "orders":
                orders = self.timeline(
                    "Order", nodes, "orders", "placed_at", ORDER_FILTERS, f"{g}.id", self.order
                )
                pairs.append((key, orders))
            elif name == "interactions":
                timeline = self.timeline(
                    "Interaction",
                    nodes,
                    "interaction",
                    "occurred_at",
                    INTERACTION_FILTERS,
                    f"{g}.id",
                    self.interaction,
                )
                pairs.append((key, timeline))
            else:  # pragma: no cover - KNOWN and this list are the same
                raise Fallback(name)
        joins = ""
        if summary:
            joins = (
                "left join lateral (select count(*) as order_count, coalesce(sum(o.paid_fen), 0)::bigint as total_spent_fen, "
                "min(o.placed_at) as first_order_at, max(o.placed_at) as last_order_at from orders o "
                f"where o.customer_id = {g}.id and o.status <> 'cancelled') s on true"
            )
        return obj(pairs), joins

    def attribute(self, nodes: list[FieldNode], g: str, column: str, kind: str) -> Json:
        raw = f"to_char({g}.{column}, 'YYYY-MM-DD')" if column == "birth_date" else f"{g}.{column}::text"
        value, masked = self.pii(kind, raw, f"{g}.id")
        lineage = f"{g}.lineage->'{column}'"
        pairs = []
        for key, fnodes in self.sub("Attribute", nodes).items():
            name = fnodes[0].name.value
            if name == "__typename":
                pairs.append((key, "'Attribute'"))
            elif name == "value":
                pairs.append((key, value))
            elif name == "masked":
                pairs.append((key, masked))
            elif name == "source":
                source = []
                for skey, snodes in self.sub("AttributeSource", fnodes).items():
                    sname = snodes[0].name.value
                    source.append((skey, {
                        "__typename": "'AttributeSource'",
                        "channel": f"({lineage}->>'channel')",
                        "rule": f"({lineage}->>'rule')",
                        "actor": f"({lineage}->>'actor')",
                        # Written by isoformat() (identity.survivorship), so its text is what Python prints.
                        "updatedAt": f"(case when jsonb_typeof({lineage}->'observed_at') = 'string' then {lineage}->>'observed_at' end)",
                        "externalId": "(select si.external_id from source_identity si "
                                      f"where si.id = ({lineage}->>'source_identity_id')::bigint)",
                    }[sname]))  # fmt: skip
                pairs.append(
                    (
                        key,
                        f"(case when jsonb_typeof({lineage}) = 'object' and {lineage} <> '{{}}'::jsonb "
                        f"then {obj(source)} end)",
                    )  # fmt: skip
                )
        return obj(pairs)

    def identity(self, fields: Fields, si: str) -> tuple[Json, str]:
        plain = {
            "channel": f"{si}.channel_code", "externalId": f"{si}.external_id", "phoneMasked": f"{si}.phone_masked",
            "phoneVerified": f"{si}.phone_verified", "memberNo": f"{si}.member_no",
            "wechatUnionid": f"{si}.wechat_unionid", "province": f"{si}.province", "city": f"{si}.city",
            "district": f"{si}.district", "linkRule": f"{si}.link_rule", "linkScore": f"{si}.link_score",
            "linkedAt": _iso_or_null(f"{si}.linked_at"), "sourceUpdatedAt": _iso_or_null(f"{si}.source_updated_at"),
            "id": global_id("SourceIdentity", f"{si}.id"), "__typename": "'SourceIdentity'",
        }  # fmt: skip
        pairs = []
        for key, nodes in fields.items():
            name = nodes[0].name.value
            if name in ("name", "nickname", "phone", "email"):
                pairs.append((key, self.pii(name, f"{si}.{name}", f"{si}.customer_id")[0]))
            else:
                pairs.append((key, plain[name]))
        return obj(pairs), ""

    def consents(self, nodes: list[FieldNode], g: str) -> Json:
        plain = {
            "purpose": "c.purpose", "status": "c.status", "source": "c.source",
            "recordedAt": iso("c.recorded_at"), "__typename": "'Consent'",
        }  # fmt: skip
        pairs = [(key, plain[fnodes[0].name.value]) for key, fnodes in self.sub("Consent", nodes).items()]
        # The latest row per purpose is the one in force (schema.loaders._consents).
        latest = (
            f"(select distinct on (purpose) * from consent where customer_id = {g}.id"
            " order by purpose, recorded_at desc, id desc) c"
        )
        return array(obj(pairs), latest, "c.purpose")

    def merges(self, nodes: list[FieldNode], g: str) -> Json:
        absorbed = global_id("Customer", "a.c")
        plain = {
            "id": global_id("MergeEvent", "m.id"), "kind": "m.kind", "actor": "m.actor", "reason": "m.reason",
            "survivingCustomerId": f"(case when m.surviving_customer_id is null then null else {global_id('Customer', 'm.surviving_customer_id')} end)",
            "absorbedCustomerIds": array(absorbed, "unnest(m.absorbed_customer_ids) with ordinality as a(c, n)", "a.n"),
            "evidence": "m.evidence", "undone": "(m.undone_by_event_id is not null)",
            "createdAt": iso("m.created_at"), "__typename": "'MergeEvent'",
        }  # fmt: skip
        pairs = [(key, plain[fnodes[0].name.value]) for key, fnodes in self.sub("MergeEvent", nodes).items()]
        # Newest first, every event the customer survived or was absorbed in (schema.loaders._merges).
        events = (
            f"merge_event m where m.surviving_customer_id = {g}.id or {g}.id = any(m.absorbed_customer_ids)"
        )
        return array(obj(pairs), events, "m.created_at desc, m.id desc")

    def order(self, fields: Fields, x: str) -> tuple[Json, str]:
        plain = {
            "id": global_id("Order", f"{x}.id"), "channel": f"{x}.channel_code", "externalId": f"{x}.external_id",
            "status": f"{x}.status", "sourceStatus": f"{x}.source_status", "placedAt": iso(f"{x}.placed_at"),
            "paidAt": _iso_or_null(f"{x}.paid_at"), "__typename": "'Order'",
        }  # fmt: skip
        money = {
            "total": "total_fen",
            "paid": "paid_fen",
            "discount": "discount_fen",
            "shipping": "shipping_fen",
        }
        pairs = []
        for key, nodes in fields.items():
            name = nodes[0].name.value
            if name in money:
                pairs.append((key, self.money(nodes, f"{x}.{money[name]}", f"{x}.currency")))
            elif name == "lines":
                pairs.append((key, self.lines(nodes, x)))
            elif name == "refunds":
                pairs.append((key, self.refunds(nodes, x)))
            else:
                pairs.append((key, plain[name]))
        return obj(pairs), ""

    def lines(self, nodes: list[FieldNode], x: str) -> Json:
        plain = {"lineNo": "l.line_no", "sku": "l.sku", "title": "l.title", "quantity": "l.quantity",
                 "__typename": "'OrderLine'"}  # fmt: skip
        money = {"unitPrice": "l.unit_price_fen", "discount": "l.discount_fen", "amount": "l.amount_fen"}
        pairs = []
        for key, fnodes in self.sub("OrderLine", nodes).items():
            name = fnodes[0].name.value
            if name in money:
                pairs.append((key, self.money(fnodes, money[name], f"{x}.currency")))
            elif name == "product":
                product = {"id": global_id("Product", "p.id"), "sku": "p.sku", "title": "p.title",
                           "category": "p.category", "__typename": "'Product'"}  # fmt: skip
                inner = [(k, product[f[0].name.value]) for k, f in self.sub("Product", fnodes).items()]
                pairs.append(
                    (key, f"(case when l.product_id is not null and p.sku is not null then {obj(inner)} end)")
                )
            else:
                pairs.append((key, plain[name]))
        lines = f"order_line l left join product p on p.id = l.product_id where l.order_id = {x}.id"
        return array(obj(pairs), lines, "l.line_no")

    def refunds(self, nodes: list[FieldNode], x: str) -> Json:
        plain = {
            "id": global_id("Refund", "r.id"), "channel": "r.channel_code", "externalId": "r.external_id",
            "lineNo": "r.line_no", "reason": "r.reason", "status": "r.status",
            "requestedAt": _iso_or_null("r.requested_at"), "__typename": "'Refund'",
        }  # fmt: skip
        pairs = []
        for key, fnodes in self.sub("Refund", nodes).items():
            name = fnodes[0].name.value
            if name == "amount":
                pairs.append((key, self.money(fnodes, "r.amount_fen", f"{x}.currency")))
            else:
                pairs.append((key, plain[name]))
        return array(obj(pairs), f"refund r where r.order_id = {x}.id", "r.requested_at, r.id")

    def interaction(self, fields: Fields, x: str) -> tuple[Json, str]:
        plain = {
            "id": global_id("Interaction", f"{x}.id"), "channel": f"{x}.channel_code",
            "externalId": f"{x}.external_id", "type": f"{x}.type", "direction": f"{x}.direction",
            "occurredAt": iso(f"{x}.occurred_at"), "summary": f"{x}.summary", "__typename": "'Interaction'",
        }  # fmt: skip
        return obj((key, plain[nodes[0].name.value]) for key, nodes in fields.items()), ""


_INPUTS: dict[type, dict[str, tuple[str, type | None]]] = {}


def to_input(cls: type, value: dict[str, Any]) -> Any:
    """A coerced input object (GraphQL names, as graphql-core gives it) as its Strawberry class, as the
    executor would pass it; only the given fields (the rest keep their defaults, None)."""
    spec = _INPUTS.get(cls)
    if spec is None:
        spec = _INPUTS[cls] = {}
        for f in cls.__strawberry_definition__.fields:  # type: ignore[attr-defined]
            inner: Any = f.type
            while isinstance(inner, StrawberryOptional | StrawberryList):
                inner = inner.of_type
            nested = inner if isinstance(inner, type) and has_object_definition(inner) else None
            spec[f.graphql_name or to_camel_case(f.python_name)] = (f.python_name, nested)
    kwargs = {}
    for key, item in value.items():
        if item is None:
            continue
        name, nested = spec[key]
        if nested is not None:
            item = [to_input(nested, i) for i in item] if isinstance(item, list) else to_input(nested, item)
        kwargs[name] = item
    return cls(**kwargs)


def _iso_or_null(ts: str) -> str:
    return f"(case when {ts} is null then null else {iso(ts)} end)"


def coerce_variables(schema: GraphQLSchema, prepared: Prepared, inputs: dict[str, Any]) -> Any:
    """The request's variables coerced as the executor would; Fallback when they are wrong (it reports)."""
    values = get_variable_values(schema, prepared.operation.variable_definitions or [], inputs or {})
    if isinstance(values, list):
        raise Fallback("bad variables")
    return values
