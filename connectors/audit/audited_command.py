"""Management commands in the audit trail: their changes are recorded "via command", by "system" (the operator
at the shell is not a user of the app)."""

from contextlib import contextmanager

from django.core.management.base import BaseCommand


@contextmanager
def from_the_command_line():
    """For manage.py: every command, Django's own included (createsuperuser, changepassword)."""
    from connectors.audit import context  # only once Django's settings can be read
    from connectors.audit.choices import Via

    with context.acting(via=Via.COMMAND):
        yield


class AuditedCommand(BaseCommand):
    """This project's commands; also when run with call_command (tests, other commands)."""

    def execute(self, *args, **options):
        with from_the_command_line():
            return super().execute(*args, **options)
