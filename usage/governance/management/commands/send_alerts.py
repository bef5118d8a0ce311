from django.core.management.base import BaseCommand

from usage.governance.alerts import check_error_rates, send_due_deliveries


class Command(BaseCommand):
    help = (
        "Check the error-rate rules and send every alert delivery that is due, once. Each server process does this "
        "by itself every few seconds; this command is for running it from cron or by hand."
    )

    def handle(self, *args, **options):
        raised = check_error_rates()
        sent = send_due_deliveries()
        self.stdout.write(f"{raised} error-rate alert(s) raised, {sent} delivery(ies) sent.")
