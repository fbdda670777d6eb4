# Usage is written at admission as a provisional row, refreshed while the job runs and
# finalised at its end; rows whose queen died are settled as interrupted.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0003_plan_moved_to_tenants'),
    ]

    operations = [
        migrations.AddField(
            model_name='usageevent',
            name='heartbeat_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='usageevent',
            name='queen',
            field=models.CharField(blank=True, default='', max_length=120),
        ),
        migrations.AddField(
            model_name='usageevent',
            name='ticket',
            field=models.CharField(blank=True, default='', max_length=64),
        ),
        migrations.AlterField(
            model_name='usageevent',
            name='outcome',
            field=models.CharField(choices=[('ok', 'Ok'), ('disconnected', 'Disconnected'), ('error', 'Error'), ('provisional', 'Provisional'), ('interrupted', 'Interrupted')], default='ok', max_length=16),
        ),
        migrations.AddIndex(
            model_name='usageevent',
            index=models.Index(condition=models.Q(('outcome', 'provisional')), fields=['heartbeat_at'], name='usage_provisional'),
        ),
    ]
