from django.db import models


class AuthFailureWindow(models.Model):
    """Authentication attempts not (yet) followed by a success, per client address or username, in a window.

    One row per address and per username (as an HMAC: a username field sometimes receives a password), shared by
    every server process through the database. Written only by connectors.throttling.failures, with upserts.
    """

    # The throttle reads and upserts rows by this key.
    bucket = models.CharField(max_length=80, unique=True)
    failures = models.PositiveIntegerField(default=0)
    # Seconds since the epoch (not a datetime): the upsert compares it in SQL the same way on SQLite and PostgreSQL.
    window_started = models.FloatField()

    class Meta:
        verbose_name = "authentication failure window"

    def __str__(self) -> str:
        return f"{self.bucket}: {self.failures}"
