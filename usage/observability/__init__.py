"""What the app tells the monitoring systems operators already run (README: Prometheus, OpenTelemetry).

``execution.py`` follows one execution (its provider, its upstream time, its span) from the moment it opens to the
moment its event is recorded; ``metrics.py`` holds the Prometheus metrics; ``tracing.py`` the optional
OpenTelemetry spans; ``views.py`` serves ``GET /metrics``.
"""
