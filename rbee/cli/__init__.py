"""The `rbee` command line: one module per command group.

Queen-side commands (up, queen, tenant, key, plan, model, worker, billing, operator, hive
token/list) set Django up when they run (see `_common.uses_database`); importing this
package imports no Django and no app, so `rbee --help` is fast and `rbee hive start`
runs on GPU machines that only have the hive extras installed.
"""

from __future__ import annotations

import click

from rbee.cli.audit import audit
from rbee.cli.billing import billing
from rbee.cli.gdpr import gdpr
from rbee.cli.hive import hive
from rbee.cli.key import key
from rbee.cli.model import model
from rbee.cli.operator import operator
from rbee.cli.plan import plan
from rbee.cli.queen import queen
from rbee.cli.scheduler import scheduler
from rbee.cli.tenant import tenant
from rbee.cli.up import up
from rbee.cli.worker import worker

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rbee")
def main() -> None:
    """rbee: every GPU and CPU you own as one OpenAI-compatible API (port 7833)."""


for _command in (
    up,
    queen,
    hive,
    tenant,
    key,
    plan,
    model,
    worker,
    scheduler,
    billing,
    operator,
    gdpr,
    audit,
    gdpr,
):
    main.add_command(_command)
