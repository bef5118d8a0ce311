"""Plotly figures for the dashboard, as plain figure dicts (``{"data": [...], "layout": {...}}``).

The figures are built by hand rather than with ``plotly.graph_objects``: the graph objects validate every
property on construction, which cost about 60 ms per page for these five figures (measured), most of the
dashboard's time budget. The dicts follow plotly's figure schema, and the tests pass each one through
``plotly.graph_objects.Figure`` so that a typo in a property fails there instead of in the browser.
static/js/usage_dashboard.js draws them with the plotly.js served by whitenoise.
"""

from functools import wraps

from usage.dashboards.queries import BreakdownRow, UsageReport
from usage.formatting import currency
from usage.ranges import DAY

PROMPT_COLOUR = "#0b64dd"
COMPLETION_COLOUR = "#f0a202"
SUCCESS_COLOUR = "#1d7a46"
FAILURE_COLOUR = "#c0362c"
PERCENTILE_COLOURS = {"p50": "#0b64dd", "p95": "#f0a202", "p99": "#c0362c"}

# Given to Plotly.newPlot: no plotly.com links or cloud buttons, resize with the page.
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


def _layout(**extra) -> dict:
    layout = {
        "height": 320,
        "margin": {"l": 60, "r": 20, "t": 10, "b": 50},
        # "normal": plotly lists stacked bars top-down by default, the opposite of the order they are named in.
        # Above the plot area, anchored by its bottom edge: when a narrow screen wraps the legend onto more lines
        # it grows upwards and plotly widens the top margin for it, instead of covering the bars.
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "traceorder": "normal"},
        "font": {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 12},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "yaxis": {"rangemode": "tozero", "gridcolor": "#e6e9ef", "separatethousands": True},
    }
    layout.update(extra)
    return layout


def _time_axis(report: UsageReport) -> dict:
    return {
        "type": "date",
        "title": {"text": f"{'Day' if report.range.bucket == DAY else 'Hour'} ({report.range.tz_name})"},
        "gridcolor": "#e6e9ef",
    }


def _bucket_labels(report: UsageReport) -> list[str]:
    # plotly.js ignores offsets in date strings, so send the viewer's wall-clock time; the axis names the zone.
    fmt = "%Y-%m-%d" if report.range.bucket == DAY else "%Y-%m-%d %H:%M"
    return [point.bucket.strftime(fmt) for point in report.series]


def _bar(name: str, x: list, y: list, colour: str, **extra) -> dict:
    return {"type": "bar", "name": name, "x": x, "y": y, "marker": {"color": colour}, **extra}


def tokens_over_time(report: UsageReport) -> dict:
    x = _bucket_labels(report)
    return {
        "data": [
            _bar("Prompt tokens", x, [p.sums.prompt_tokens for p in report.series], PROMPT_COLOUR),
            _bar("Completion tokens", x, [p.sums.completion_tokens for p in report.series], COMPLETION_COLOUR),
        ],
        "layout": _layout(barmode="stack", hovermode="x unified", xaxis=_time_axis(report)),
    }


COST_COLOUR = "#6b3fa0"


def cost_over_time(report: UsageReport) -> dict:
    """The priced requests' cost per bucket, in USAGE_CURRENCY (nanos turned into the currency for the axis only)."""

    x = _bucket_labels(report)
    y = [p.sums.cost_nanos / 1e9 for p in report.series]  # a plot's axis; every figure shown as text is exact
    layout = _layout(hovermode="x unified", xaxis=_time_axis(report))
    layout["yaxis"] = {**layout["yaxis"], "title": {"text": f"Cost ({currency()})"}}
    return {"data": [_bar("Cost", x, y, COST_COLOUR, hovertemplate="%{y:,.4f}")], "layout": layout}


def _breakdown_figure(rows: list[BreakdownRow], empty_label: str, axis_title: str) -> dict:
    # Horizontal bars, largest at the top, so that long user and model names stay readable.
    rows = list(reversed(rows))
    names = [row.key or empty_label for row in rows]
    return {
        "data": [
            _bar("Prompt tokens", [r.sums.prompt_tokens for r in rows], names, PROMPT_COLOUR, orientation="h"),
            _bar("Completion tokens", [r.sums.completion_tokens for r in rows], names, COMPLETION_COLOUR, orientation="h"),
        ],
        "layout": _layout(
            barmode="stack",
            hovermode="y unified",
            height=max(220, 60 + 28 * len(rows)),
            margin={"l": 160, "r": 20, "t": 10, "b": 40},
            xaxis={"title": {"text": "Tokens"}, "gridcolor": "#e6e9ef", "separatethousands": True},
            yaxis={"type": "category", "automargin": True, "title": {"text": axis_title}},
        ),
    }


def tokens_per_user(report: UsageReport) -> dict:
    return _breakdown_figure(report.by_user, "(no user)", "User")


def tokens_per_model(report: UsageReport) -> dict:
    return _breakdown_figure(report.by_model, "(unknown model)", "Model")


def requests_by_outcome(report: UsageReport) -> dict:
    x = _bucket_labels(report)
    return {
        "data": [
            _bar("Success", x, [p.sums.successes for p in report.series], SUCCESS_COLOUR),
            _bar("Failure", x, [p.sums.failures for p in report.series], FAILURE_COLOUR),
        ],
        "layout": _layout(barmode="stack", hovermode="x unified", xaxis=_time_axis(report)),
    }


def duration_percentiles(report: UsageReport) -> dict:
    x = _bucket_labels(report)
    lines = []
    for name in ("p50", "p95", "p99"):
        values = [getattr(p.sums, f"{name}_ms") for p in report.series]
        lines.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": name,
                "x": x,
                "y": [round(v, 1) if v is not None else None for v in values],
                "line": {"color": PERCENTILE_COLOURS[name]},
                "marker": {"size": 4},
                "connectgaps": False,  # no requests in a bucket: a gap, not a made-up line
                "hovertemplate": "%{y:,.0f} ms",
            }
        )
    layout = _layout(hovermode="x unified", xaxis=_time_axis(report))
    layout["yaxis"] = {**layout["yaxis"], "title": {"text": "Duration (ms)"}}
    return {"data": lines, "layout": layout}


def total_tokens_per_user(rows: list[BreakdownRow]) -> dict:
    """One bar of total tokens per user (Kibana's "Total tokens per user"), largest at the top."""
    figure = _breakdown_figure(rows, "(no user)", "User")
    names = figure["data"][0]["y"]
    totals = [row.sums.total_tokens for row in reversed(rows)]
    figure["data"] = [_bar("Total tokens", totals, names, PROMPT_COLOUR, orientation="h")]
    return figure


def _linked(figure: dict, *urls: list[str]) -> dict:
    """Each trace's points carry the URL of the calls behind them (customdata; static/js/usage_dashboard.js opens
    it on a click). One list per trace, in the order of the trace's points."""
    for trace, links in zip(figure["data"], urls, strict=True):
        trace["customdata"] = links
    return figure


def _bucket_links(report, links, **filters) -> list[str]:
    return [links.bucket(point.bucket, **filters) for point in report.series]


def _row_links(rows: list[BreakdownRow], dimension: str, links) -> list[str]:
    return [links.row(dimension, row) for row in reversed(rows)]  # the figures list rows bottom-up


def overview_charts(by_user: list[BreakdownRow], timeline=None, links=None) -> list[dict]:
    """The overview's charts across every connector: cost over time (when ``timeline``, an object with ``series``
    and ``range``, is given), and the two per-user charts of Kibana's OpenAI Token Usage dashboard."""
    charts = []
    if timeline is not None:
        figure = cost_over_time(timeline)
        charts.append({"id": "chart-cost-over-time", "title": "Cost over time, all connectors",
                       "figure": _linked(figure, _bucket_links(timeline, links)) if links else figure})
    per_user = _breakdown_figure(by_user, "(no user)", "User")
    totals = total_tokens_per_user(by_user)
    if links:
        user_links = _row_links(by_user, "user", links)
        _linked(per_user, user_links, user_links)
        _linked(totals, user_links)
    charts += [
        {"id": "chart-user-prompt-completion", "title": "Prompt + completion tokens per user", "figure": per_user},
        {"id": "chart-user-total", "title": "Total tokens per user", "figure": totals},
    ]
    return charts


def dashboard_charts(report: UsageReport, links=None) -> list[dict]:
    """The dashboard's charts in page order: ``{"id", "title", "figure"}`` each; with ``links`` (a
    usage/dashboards/drill_down.DrillDown), every point leads to its calls on the Logs tab."""
    charts = [
        {"id": "chart-tokens-over-time", "title": "Prompt and completion tokens over time", "figure": tokens_over_time(report)},
        {"id": "chart-cost-over-time", "title": "Cost over time", "figure": cost_over_time(report)},
        {"id": "chart-tokens-per-user", "title": "Tokens per user", "figure": tokens_per_user(report)},
        {"id": "chart-tokens-per-model", "title": "Tokens per model", "figure": tokens_per_model(report)},
        {"id": "chart-requests-by-outcome", "title": "Requests by outcome over time", "figure": requests_by_outcome(report)},
        {"id": "chart-duration-percentiles", "title": "Duration percentiles over time", "figure": duration_percentiles(report)},
    ]
    if links is not None:
        every_call = _bucket_links(report, links)
        users, models = _row_links(report.by_user, "user", links), _row_links(report.by_model, "model", links)
        figures = [chart["figure"] for chart in charts]
        _linked(figures[0], every_call, every_call)
        _linked(figures[1], every_call)
        _linked(figures[2], users, users)
        _linked(figures[3], models, models)
        _linked(figures[4], _bucket_links(report, links, outcome="success"), _bucket_links(report, links, outcome="failure"))
        _linked(figures[5], every_call, every_call, every_call)
    return charts


def allows_inline_styles(view):
    """For a view whose page draws plotly charts: plotly.js writes style attributes as it draws, so the page's
    Content-Security-Policy allows inline styles (and only styles; connectors_admin/csp.py reads the mark)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response.csp_allows_inline_styles = True
        return response

    return wrapper
