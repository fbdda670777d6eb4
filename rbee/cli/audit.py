"""`rbee audit`: the tamper-evident audit log (gdpr.ledger).

* `verify`: recompute the Merkle tree from the stored events and check it against every
  signed checkpoint in the sink; exit 0 with the event count and root, exit 1 naming the
  first index that does not match (or the checkpoint the log no longer extends).
* `checkpoint`: sign and write a checkpoint now (the queen does so at least every 60 s);
  exit 1, signing nothing, when the stored log no longer extends the last signed checkpoint
  (edited, or an older copy restored).
* `pubkey`: the Ed25519 public key that signs checkpoints, for customers and auditors.
"""

from __future__ import annotations

import click

from rbee.cli._common import fail, note, uses_database, uses_django


@click.group()
def audit() -> None:
    """The tamper-evident audit log: verify, checkpoint, pubkey."""


@audit.command("verify")
@uses_database
def audit_verify() -> None:
    """Check every event against the signed checkpoints (exit 1 names the first bad index)."""
    from gdpr import ledger
    from gdpr.sinks import get_sink

    sink = get_sink()
    try:
        result = ledger.verify(sink=sink)
    except ledger.LogBroken as exc:
        fail(f"audit log broken: {exc}")
    click.echo(f"ok: {result.size} events, root {result.root.hex()}")
    if result.size and not result.checkpoints:
        note(
            f"warning: no signed checkpoints in {sink.where}: nothing outside the database "
            "vouches for this log (is RBEE_AUDIT_CHECKPOINT_DIR or _S3 right?)"
        )
    note(
        f"{result.checkpoints} signed checkpoint(s) verified"
        + (
            f"; {result.pending} event(s) appended since, not yet in the tree"
            if result.pending
            else ""
        )
    )


@audit.command("checkpoint")
@uses_database
def audit_checkpoint() -> None:
    """Sign and write a checkpoint of the whole log now (exit 1, nothing signed, when the
    log no longer extends the last checkpoint)."""
    from gdpr import ledger
    from gdpr.sinks import get_sink

    sink = get_sink()
    try:
        cp = ledger.checkpoint(force=True, sink=sink)
    except ledger.LogBroken as exc:
        fail(f"audit log broken: {exc}")
    assert cp is not None
    click.echo(f"checkpoint {cp.name}: {cp.size} events, root {cp.root.hex()}, {cp.time}")
    note(f"written to {sink.where}")


@audit.command("pubkey")
@uses_django
def audit_pubkey() -> None:
    """The public key (Ed25519, base64) that verifies checkpoints and proofs."""
    from gdpr import crypto

    click.echo(crypto.public_key_b64())
