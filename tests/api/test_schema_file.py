"""docs/schema.graphql is the schema the API serves: frontend teams generate their clients from it."""

from __future__ import annotations

from pathlib import Path

from schema import schema

SDL = Path(__file__).resolve().parents[2] / "docs" / "schema.graphql"


def test_the_exported_schema_is_current() -> None:
    assert SDL.read_text() == schema.as_str() + "\n", "regenerate it: c360 api schema > docs/schema.graphql"
