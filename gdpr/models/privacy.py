"""gdpr tables: privacy."""

__all__: list[str] = []
