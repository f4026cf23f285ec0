"""Relational side of the registry: models, engines, schema migrations."""
