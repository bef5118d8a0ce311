"""gunicorn's worker class for this app: uvicorn's, serving with the project's HTTP protocol
(connectors_admin/http_protocol.py), as ``make run`` does::

    gunicorn connectors_admin.asgi:application -k connectors_admin.gunicorn_worker.Worker -w 2 -b 127.0.0.1:8000
"""

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # uvicorn points to the uvicorn-worker package; same class
    from uvicorn.workers import UvicornWorker

from connectors_admin.http_protocol import PROTOCOL


class Worker(UvicornWorker):
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": PROTOCOL}
