"""The cache of complete chunks' roots (gdpr.ledger: proofs and checkpoints in
O(chunk + size / chunk), not O(size))."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("gdpr", "0003_privacy")]

    operations = [
        migrations.CreateModel(
            name="AuditSubtree",
            fields=[
                ("chunk", models.BigIntegerField(primary_key=True, serialize=False)),
                ("hash", models.BinaryField()),
            ],
            options={"db_table": "gdpr_audit_subtree"},
        ),
    ]
