#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectors_admin.settings")
    from django.core.management import execute_from_command_line

    from connectors.audit.audited_command import from_the_command_line

    with from_the_command_line():  # changes made by any command (createsuperuser too) are recorded "via command"
        execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
