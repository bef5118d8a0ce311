from django.apps import AppConfig


class SpacesConfig(AppConfig):
    name = "connectors.spaces"
    label = "spaces"
    verbose_name = "Spaces"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from connectors.spaces import directory
        from connectors.spaces.models import Space

        post_save.connect(directory.announce_change, sender=Space, dispatch_uid="space_directory_saved")
        post_delete.connect(directory.announce_change, sender=Space, dispatch_uid="space_directory_deleted")
