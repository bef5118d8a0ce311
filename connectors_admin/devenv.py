"""Write a .env with local development secrets, once. Used by `make run`; never by production."""

import secrets
import sys
from pathlib import Path

from cryptography.fernet import Fernet


def main(path: str = ".env") -> None:
    target = Path(path)
    if target.exists():
        return
    target.write_text(
        "# Local development settings written by `make run`. Ignored by git; never use these values in production.\n"
        "DEBUG=true\n"
        f"SECRET_KEY={secrets.token_urlsafe(50)}\n"
        f"CONNECTORS_ENCRYPTION_KEYS={Fernet.generate_key().decode()}\n",
        encoding="utf-8",
    )
    target.chmod(0o600)
    print(f"Created {target} with local development keys (DEBUG on, a new SECRET_KEY and encryption key).")


if __name__ == "__main__":
    main(*sys.argv[1:])
