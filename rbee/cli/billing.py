"""`rbee billing`: the Celery worker for Stripe and invoices."""

from __future__ import annotations

import click

from rbee.cli._common import uses_django


@click.group("billing")
def billing() -> None:
    """Metering, invoices and Stripe."""


@billing.command("worker")
@click.option("--concurrency", default=2, show_default=True, type=int)
@uses_django
def billing_worker(concurrency: int) -> None:
    """Run Celery (with its beat) for background work: usage to Stripe, past-due
    suspensions, invoice drafts. Needed with RBEE_REDIS_URL; on the embedded default the
    queen does this work itself."""
    from rbee.celery import app

    app.worker_main(["worker", "--beat", f"--concurrency={concurrency}", "--loglevel=INFO"])
