"""The settings' plain attribute lookup (connectors_admin/settings_lookup.py): the same values, read for less."""

import pytest
from django.conf import LazySettings, settings
from django.test import override_settings


def test_the_settings_are_read_without_lazy_objects_lookup_hook():
    assert LazySettings.__getattribute__ is object.__getattribute__


def test_a_setting_read_once_is_kept_and_found_again():
    settings.__dict__.pop("USE_TZ", None)
    first = settings.USE_TZ
    assert settings.__dict__["USE_TZ"] is first  # kept by LazySettings.__getattr__, found in __dict__ next time
    assert settings.USE_TZ is first


def test_an_overridden_setting_is_seen_and_then_restored():
    before = settings.EVENT_RETENTION_DAYS
    with override_settings(EVENT_RETENTION_DAYS=before + 7):
        assert settings.EVENT_RETENTION_DAYS == before + 7
    assert settings.EVENT_RETENTION_DAYS == before


def test_a_setting_changed_in_place_is_seen(settings):  # pytest-django's fixture sets attributes
    settings.METRICS_MODELS_PER_CONNECTOR = 3
    from django.conf import settings as django_settings

    assert django_settings.METRICS_MODELS_PER_CONNECTOR == 3


def test_a_missing_setting_is_still_an_attribute_error():
    with pytest.raises(AttributeError):
        settings.NO_SUCH_SETTING  # noqa: B018
    assert not hasattr(settings, "NO_SUCH_SETTING")
    assert getattr(settings, "NO_SUCH_SETTING", "default") == "default"


def test_the_settings_object_still_looks_like_its_settings():
    assert settings.configured
    assert isinstance(settings, LazySettings)
    assert "Settings" in repr(settings)
