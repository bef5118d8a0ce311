import secrets

from django.contrib.auth import get_user_model

from connectors.audit.audited_command import AuditedCommand


class Command(AuditedCommand):
    help = "Create a superuser named 'admin' with a generated password when no user exists yet (used by `make run`)."

    def add_arguments(self, parser):
        # `make run` passes the HOST and PORT it serves on, so the message names the address that works.
        parser.add_argument("--url", default="http://127.0.0.1:8000/", help="Where the app is served.")

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.exists():
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "", password)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created the first account. Log in at {options['url']} with\n"
                f"    username: admin\n    password: {password}\n"
                "This password is shown only now; change it at /accounts/password_change/."
            )
        )
