# Plans move to tenants. Step 3 of 3: prices point at tenants.Plan and billing forgets its
# Plan (state only: the table now belongs to tenants).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0002_plan_table_to_tenants'),
        ('tenants', '0004_plan'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='price',
                    name='plan',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, to='tenants.plan'),
                ),
                migrations.DeleteModel(name='Plan'),
            ],
            database_operations=[],
        ),
    ]
