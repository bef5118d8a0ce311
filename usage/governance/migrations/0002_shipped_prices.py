from django.db import migrations


def load(apps, schema_editor):
    from usage.governance.pricing.shipped_prices import load_price_file

    load_price_file(apps.get_model("governance", "Price"), "prices-2026-11-29.yaml")


class Migration(migrations.Migration):
    dependencies = [("governance", "0001_initial")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
