"""gdpr tables: audit."""

__all__: list[str] = []
