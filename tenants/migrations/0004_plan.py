# Plans move to tenants. Step 2 of 3: tenants.Plan takes over the table billing renamed
# (state only: the rows are already there), and Tenant.plan points at it.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0003_stripe_event_order'),
        ('billing', '0002_plan_table_to_tenants'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Plan',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.SlugField(max_length=64, unique=True)),
                        ('description', models.CharField(blank=True, default='', max_length=200)),
                        ('allowed_models', models.JSONField(blank=True, default=list)),
                        ('requests_per_day', models.PositiveIntegerField(blank=True, null=True)),
                        ('tokens_per_day', models.PositiveBigIntegerField(blank=True, null=True)),
                        ('images_per_day', models.PositiveIntegerField(blank=True, null=True)),
                        ('audio_seconds_per_day', models.PositiveIntegerField(blank=True, null=True)),
                        ('characters_per_day', models.PositiveBigIntegerField(blank=True, null=True)),
                        ('requests_per_minute', models.PositiveIntegerField(blank=True, null=True)),
                        ('tokens_per_minute', models.PositiveIntegerField(blank=True, null=True)),
                        ('max_concurrent', models.PositiveIntegerField(blank=True, null=True)),
                        ('stripe_price_id', models.CharField(blank=True, default='', max_length=100)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                    ],
                ),
                migrations.AlterField(
                    model_name='tenant',
                    name='plan',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='tenants', to='tenants.plan'),
                ),
            ],
            database_operations=[],
        ),
    ]
