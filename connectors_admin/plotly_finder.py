"""Serve plotly.js from the pinned Python ``plotly`` package instead of a 4 MB copy in the repository.

The package ships ``plotly/package_data/plotly.min.js``; this finder exposes exactly that one file as the static
path ``vendor/plotly.min.js``, so ``collectstatic`` copies it (and whitenoise serves it) like any other static file,
and the version served always matches the Python library that built the figures. Never a CDN: the dashboard
must work on a machine with no internet access.
"""

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Error
from django.core.files.storage import FileSystemStorage

PLOTLY_STATIC_DIR = "vendor"
PLOTLY_FILE_NAME = "plotly.min.js"
PLOTLY_STATIC_PATH = f"{PLOTLY_STATIC_DIR}/{PLOTLY_FILE_NAME}"


def plotly_package_data() -> Path:
    return Path(plotly.__file__).resolve().parent / "package_data"


class PlotlyJsFinder(BaseFinder):
    """A staticfiles finder for the single file ``vendor/plotly.min.js``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.storage = FileSystemStorage(location=plotly_package_data())
        # collectstatic and whitenoise put a storage's files under its ``prefix``.
        self.storage.prefix = PLOTLY_STATIC_DIR

    def check(self, **kwargs) -> list:
        if not (plotly_package_data() / PLOTLY_FILE_NAME).is_file():
            return [Error(f"{PLOTLY_FILE_NAME} is missing from the installed plotly package.", id="usage.E001")]
        return []

    def find(self, path: str, find_all: bool = False, **kwargs):
        find_all = self._check_deprecated_find_param(find_all=find_all, **kwargs)
        if path != PLOTLY_STATIC_PATH:
            return []  # as Django's own finders do: finders.find() treats None as a match
        match = str(plotly_package_data() / PLOTLY_FILE_NAME)
        return [match] if find_all else match

    def list(self, ignore_patterns):
        yield PLOTLY_FILE_NAME, self.storage
