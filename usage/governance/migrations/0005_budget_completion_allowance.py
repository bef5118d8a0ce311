import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('governance', '0004_alerts'),
    ]

    operations = [
        migrations.AddField(
            model_name='budget',
            name='completion_allowance',
            field=models.PositiveIntegerField(default=4096, help_text='Completion tokens reserved for a call that sets no max_tokens or max_completion_tokens, on top of its prompt. A call that sets one reserves that instead.', validators=[django.core.validators.MaxValueValidator(10000000)]),
        ),
    ]
