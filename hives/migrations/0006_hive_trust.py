"""A hive is not trusted with the catalog: model approvals, operator-only region,
revocation and disabling; downloads record their revision."""

import django.db.models.deletion
from django.db import migrations, models


def approve_what_runs(apps, schema_editor):  # type: ignore[no-untyped-def]
    """Workers recorded before approvals existed were let in then: keep them routable."""
    Worker = apps.get_model("hives", "Worker")
    ModelApproval = apps.get_model("hives", "ModelApproval")
    pairs = set(Worker.objects.values_list("hive_id", "model__name"))
    ModelApproval.objects.bulk_create(
        [
            ModelApproval(hive_id=hive_id, model_name=name, approved=True, reason="upgrade")
            for hive_id, name in pairs
        ],
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("hives", "0005_worker_stopping"),
    ]

    operations = [
        migrations.AddField(
            model_name="hive",
            name="reported_region",
            field=models.CharField(blank=True, default="", max_length=32),
        ),
        migrations.AddField(
            model_name="hive",
            name="trust_models",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="hive",
            name="disabled",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="hive",
            name="token_revoked",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="modeldownload",
            name="revision",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.CreateModel(
            name="ModelApproval",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("model_name", models.CharField(max_length=200)),
                ("approved", models.BooleanField(default=False)),
                ("capability", models.CharField(blank=True, default="", max_length=32)),
                ("engine", models.CharField(blank=True, default="", max_length=64)),
                ("source", models.CharField(blank=True, default="", max_length=1000)),
                ("device", models.CharField(blank=True, default="", max_length=32)),
                ("state", models.CharField(blank=True, default="", max_length=16)),
                ("reason", models.CharField(blank=True, default="", max_length=200)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "hive",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="approvals",
                        to="hives.hive",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("hive", "model_name"), name="uniq_model_approval"
                    )
                ],
            },
        ),
        migrations.RunPython(approve_what_runs, migrations.RunPython.noop),
    ]
