"""gdpr tables: requests."""

__all__: list[str] = []
