# Operators' permissions per area (fleet, scheduler, tenants and billing, audit), held by
# an unmanaged model: no table, only its permission rows.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0004_plan'),
    ]

    operations = [
        migrations.CreateModel(
            name='Operator',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
            ],
            options={
                'db_table': 'tenants_operator_permissions_only',
                'managed': False,
                'default_permissions': (),
                'permissions': [
                    ('operate_fleet', 'Fleet: hives, models, workers, downloads, aliases'),
                    ('operate_scheduler', 'Scheduler: replace and read the Rhai scheduler script'),
                    ('operate_tenants', 'Tenants and billing: tenants, keys, plans, usage, invoices'),
                    ('read_audit', 'Audit: read the audit and usage logs'),
                ],
            },
        ),
    ]
