from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0006_plan_queue_weight_max_priority"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="data_region",
            field=models.CharField(blank=True, default="", max_length=32),
        ),
        migrations.AddField(
            model_name="tenant",
            name="jurisdiction",
            field=models.CharField(blank=True, default="", max_length=2),
        ),
        migrations.AddField(
            model_name="tenant",
            name="prompt_retention",
            field=models.CharField(
                choices=[("off", "off"), ("consent", "consent"), ("contract", "contract")],
                default="off",
                max_length=8,
            ),
        ),
        migrations.AddField(
            model_name="tenant",
            name="prompt_retention_days",
            field=models.PositiveSmallIntegerField(default=30),
        ),
        migrations.AddField(
            model_name="apikey",
            name="data_region",
            field=models.CharField(blank=True, default="", max_length=32),
        ),
    ]
