# Plans move to tenants (limits are tenancy; tenants must not import billing). Step 1 of 3:
# the table takes the new app's name, rows and foreign keys untouched.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0001_initial'),
        ('tenants', '0003_stripe_event_order'),
    ]

    operations = [
        migrations.AlterModelTable(name='plan', table='tenants_plan'),
    ]
