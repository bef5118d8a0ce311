"""Retake the README's screenshots (docs/screenshots/*.png): `python -m bench.screenshots`.

Runs tests/browser/screenshots.py with pytest (a live server on a test database, Debian's Chromium), which shows
the connector list, the Logs tab, a connector's dashboard and the audit trail as the roles that use them.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    return pytest.main([str(ROOT / "tests" / "browser" / "screenshots.py"), "-q", "-p", "no:cacheprovider",
                        "--rootdir", str(ROOT), "-c", str(ROOT / "pytest.ini"), *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
