import base64

from django import forms

from connectors.models import Connector, Provider
from connectors.validation import OPENAI_DEFAULT_MODEL, api_key_error, azure_url_error

MAX_PEM_BYTES = 64 * 1024


class HeadersField(forms.CharField):
    """Extra request headers typed one per line as ``Name: value``; stored as a string map."""

    widget = forms.Textarea(attrs={"rows": 3, "placeholder": "X-Team: search\nX-Env: production"})

    def prepare_value(self, value):
        if isinstance(value, dict):
            return "\n".join(f"{name}: {val}" for name, val in value.items())
        return value

    def to_python(self, value) -> dict[str, str]:
        text = super().to_python(value) or ""
        headers: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, val = line.partition(":")
            if not sep or not name.strip():
                raise forms.ValidationError(f"Line {number}: write each header as 'Name: value'.")
            headers[name.strip()] = val.strip()
        return headers


class PemFileField(forms.FileField):
    """A PEM file for mutual TLS; stored base64-encoded, as Kibana's PKI secrets are (docs/KIBANA.md 1.2).

    A file input never shows its value again, which is what a secret needs.
    """

    def clean(self, data, initial=None):
        uploaded = super().clean(data, initial)
        if not uploaded:
            return ""
        if uploaded.size > MAX_PEM_BYTES:
            raise forms.ValidationError("A PEM file is at most 64 KB.")
        content = uploaded.read()
        if b"-----BEGIN " not in content:
            raise forms.ValidationError("Choose a PEM file (it starts with -----BEGIN ...).")
        return base64.b64encode(content).decode("ascii")


class ConnectorForm(forms.ModelForm):
    headers = HeadersField(required=False, help_text="Sent on every request; authentication headers win.")
    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    certificate_file = PemFileField(label="Client certificate (PEM)", required=False)
    private_key_file = PemFileField(label="Client private key (PEM)", required=False)
    ca_file = PemFileField(label="CA certificate (PEM)", required=False,
                           help_text="Trusted instead of the public roots for this provider. Optional.")
    remove_pki = forms.BooleanField(label="Remove the stored certificates", required=False)

    class Meta:
        model = Connector
        fields = ["name", "provider", "api_url", "default_model", "organization_id", "project_id", "headers",
                  "context_window_length", "temperature", "timeout_ms", "enable_native_function_calling",
                  "verification_mode"]
        widgets = {
            "name": forms.TextInput(attrs={"autofocus": True}),
            "provider": forms.Select(attrs={"data-provider-select": ""}),
            "api_url": forms.URLInput(attrs={"spellcheck": "false"}),
            "enable_native_function_calling": forms.NullBooleanSelect(),
        }
        help_texts = {
            "api_url": "The full chat completions URL; choosing a provider fills in its usual shape.",
            "default_model": (
                f"Used when a request names no model. OpenAI: {OPENAI_DEFAULT_MODEL} when empty. Required for Other. "
                "Azure: the deployment behind an API Management or proxy URL."
            ),
            "context_window_length": "The model's context window in tokens, for the applications that read it.",
            "temperature": "For the applications that read it (OpenAI takes 0 to 2); requests are sent as they come.",
            "timeout_ms": "A call's timeout when it names none: 200000 (200 s) when empty; streams have none.",
            "verification_mode": "TLS verification of the server's certificate; certificates are used only with a mode.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.encrypted_certificate_data:
            self.fields["certificate_file"].help_text = "A certificate is stored. Leave empty to keep it."
        if self.instance.has_api_key:
            self.fields["api_key"].help_text = (
                "A key is stored. Leave blank to keep it; a URL on another scheme, host or port needs it again."
            )
        else:
            self.fields["api_key"].help_text = "Stored encrypted; never shown again."

    def _update_errors(self, errors):
        # Connector.clean() checks again what the form's fields already refused (an empty name): one message per
        # problem is enough, so the model's message is dropped for a field that has one already.
        if hasattr(errors, "error_dict"):
            for name in list(errors.error_dict):
                if name in self._errors:
                    del errors.error_dict[name]
            if not errors.error_dict:
                return
        super()._update_errors(errors)

    def clean(self):
        cleaned = super().clean()
        provider = cleaned.get("provider")
        if provider == Provider.OPENAI and not (cleaned.get("default_model") or "").strip():
            cleaned["default_model"] = self.instance.default_model = OPENAI_DEFAULT_MODEL  # stored, as Kibana does
        if provider != Provider.OPENAI:
            cleaned["organization_id"] = cleaned["project_id"] = ""
        # Fields hidden for this provider must not turn into errors the user cannot see.
        if provider != Provider.OTHER:
            cleaned["verification_mode"] = self.instance.verification_mode = ""
            cleaned["enable_native_function_calling"] = self.instance.enable_native_function_calling = None
        if provider == Provider.AZURE and cleaned.get("api_url"):
            # A hint for people typing a URL by hand; the API accepts any URL, as Kibana does (docs/KIBANA.md 1.1).
            problem = azure_url_error(cleaned["api_url"])
            if problem:
                self.add_error("api_url", problem)
        self._apply_pki(cleaned)
        if cleaned.get("api_key"):
            problem = api_key_error(cleaned["api_key"])
            if problem:
                self.add_error("api_key", problem)
            else:
                self.instance.api_key = cleaned["api_key"]
        return cleaned

    def add_error(self, field, error):
        # The model reports PKI problems under its secret's name; here they belong to the certificate file input.
        if field is None and hasattr(error, "error_dict") and "certificate_data" in error.error_dict:
            error.error_dict["certificate_file"] = error.error_dict.pop("certificate_data")
        super().add_error(field, error)

    def _apply_pki(self, cleaned: dict) -> None:
        if cleaned.get("remove_pki") or cleaned.get("provider") != Provider.OTHER:
            self.instance.certificate_data = self.instance.private_key_data = self.instance.ca_data = ""
            return
        certificate, key, ca = (cleaned.get(name) for name in ("certificate_file", "private_key_file", "ca_file"))
        if certificate or key or ca:
            # New certificates replace the stored set as a whole (a key belongs to its certificate).
            self.instance.certificate_data = certificate or ""
            self.instance.private_key_data = key or ""
            self.instance.ca_data = ca or ""
