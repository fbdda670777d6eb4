# Where each request ran (the serving hive's operator-set region) and the tenant's end user
# (the OpenAI `user` field), for residency reports and data-subject requests (GDPR).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0004_usage_provisional'),
    ]

    operations = [
        migrations.AddField(
            model_name='usageevent',
            name='region',
            field=models.CharField(blank=True, default='', max_length=32),
        ),
        migrations.AddField(
            model_name='usageevent',
            name='end_user',
            field=models.CharField(blank=True, default='', max_length=256),
        ),
    ]
