from django.apps import AppConfig


class ConnectorsConfig(AppConfig):
    name = "connectors"
    verbose_name = "Connectors"

    def ready(self) -> None:
        from connectors import auth, preconfigured, roles  # noqa: F401 - auth connects its cache-dropping signals

        roles.connect_signals()
        # Fail at start-up, not at first use, when a preconfigured connector in ACTIONS_CONFIG is invalid.
        preconfigured.preconfigured_connectors()
