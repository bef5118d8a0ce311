import secrets

from django.contrib.auth import get_user_model

from connectors.audit.commands import AuditedCommand


class Command(AuditedCommand):
    help = "Create a superuser named 'admin' with a generated password when no user exists yet (used by `make run`)."

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.exists():
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "", password)
        self.stdout.write(
            self.style.SUCCESS(
                "Created the first account. Log in at http://127.0.0.1:8000/ with\n"
                f"    username: admin\n    password: {password}\n"
                "This password is shown only now; change it at /admin/password_change/."
            )
        )
