from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0003_requeststat"),
    ]

    operations = [
        migrations.CreateModel(
            name="StoredResponse",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("response_id", models.CharField(max_length=64, unique=True)),
                ("tenant_id", models.BigIntegerField(db_index=True)),
                ("subject", models.CharField(blank=True, default="", max_length=600)),
                ("basis", models.CharField(max_length=16)),
                ("model", models.CharField(max_length=200)),
                ("history", models.JSONField(default=list)),
                ("input_items", models.JSONField(default=list)),
                ("body", models.JSONField()),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("expires_at", models.DateTimeField(db_index=True)),
            ],
            options={
                "indexes": [models.Index(fields=["subject"], name="inference_resp_subject")],
            },
        ),
    ]
