from django.apps import AppConfig


class SpacesConfig(AppConfig):
    name = "connectors.spaces"
    label = "spaces"
    verbose_name = "Spaces"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_migrate, post_save

        from connectors.spaces import directory
        from connectors.spaces.models import Space

        post_save.connect(directory.announce_change, sender=Space, dispatch_uid="space_directory_saved")
        post_delete.connect(directory.announce_change, sender=Space, dispatch_uid="space_directory_deleted")
        # Also after a flush (which sends post_migrate): the default space always exists.
        post_migrate.connect(ensure_default_space, sender=self, dispatch_uid="spaces_default_space")


def ensure_default_space(using="default", **_kwargs) -> None:
    from connectors.spaces import directory
    from connectors.spaces.models import Space

    _space, created = Space.objects.using(using).get_or_create(
        id="default", defaults={"name": "Default", "description": "This is your default space!", "color": "#00bfb3",
                                "initials": "D"})
    if created:
        directory.forget()
