"""``settings.X`` as a plain attribute lookup: Django's ``LazyObject.__getattribute__`` left out for the settings.

Django's ``LazySettings`` keeps each setting it has read in its own ``__dict__``, so ``settings.X`` could be a
dictionary hit. It is not: ``LazyObject`` (which ``LazySettings`` extends) defines ``__getattribute__`` in Python, so
every read of every setting runs a Python function, builds a ``super()`` object and asks the value for a
``_mask_wrapped`` attribute. That hook exists for the lazy objects that proxy magic methods (``SimpleLazyObject``
around a user, say): a proxy method such as ``__getitem__`` is hidden when the wrapped object has none, so that
``hasattr(lazy, "__getitem__")`` tells the truth. Nobody asks the settings object that.

A call through the gateway reads settings about 37 times (Django's handler, request and middleware, the metrics,
the tracing, the event writer): with the hook, that was 4 % of the instructions a call costs
(docs/PERFORMANCE.md, "The settings and the request's end"). With ``object.__getattribute__`` in its place for
``LazySettings`` only, a setting read once is found in ``__dict__`` as Django meant, a setting not read yet still
reaches ``LazySettings.__getattr__`` (which reads and keeps it), and ``override_settings`` still empties that
``__dict__`` when it swaps the settings (``LazySettings.__setattr__``), so tests and ``setting_changed`` see the
same values as before (tests/core/test_settings_lookup.py).
"""

from django.conf import LazySettings


def make_settings_lookup_plain() -> None:
    """Give ``LazySettings`` the default attribute lookup (idempotent; once per process, at start-up)."""
    LazySettings.__getattribute__ = object.__getattribute__
