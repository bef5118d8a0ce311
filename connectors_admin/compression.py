"""gzip for the HTML pages (a dashboard is ~40 KB of HTML, ~8 KB compressed); nothing else.

- Only complete ``text/html`` responses: JSON API answers, server-sent event streams and CSV exports are left as
  they are (a compressed event stream would be held back by the compressor's buffer; static files are served
  precompressed by whitenoise, gzip and brotli).
- BREACH (a secret in a compressed page that also reflects attacker-chosen text, guessed from the size): Django
  masks the CSRF token differently in every response, and its GZipMiddleware pads each compressed response with
  up to 100 random bytes, so sizes do not reveal a secret. The one page that shows a real secret (a new API key,
  shown once) is not compressed at all: its view sets ``response.no_compression``. README, "Running in production".
"""

from django.middleware.gzip import GZipMiddleware


class HtmlGZipMiddleware(GZipMiddleware):
    def process_response(self, request, response):
        if response.streaming or getattr(response, "no_compression", False):
            return response
        if not response.get("Content-Type", "").startswith("text/html"):
            return response
        return super().process_response(request, response)
