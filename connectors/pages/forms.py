from django import forms

from connectors.models import Connector, Provider
from connectors.validation import api_key_error, is_azure_deployments_url


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


class ConnectorForm(forms.ModelForm):
    headers = HeadersField(required=False, help_text="Sent on every request; authentication headers win.")
    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    class Meta:
        model = Connector
        fields = ["name", "provider", "api_url", "default_model", "organization_id", "project_id", "headers"]
        widgets = {
            "name": forms.TextInput(attrs={"autofocus": True}),
            "provider": forms.Select(attrs={"data-provider-select": ""}),
            "api_url": forms.URLInput(attrs={"spellcheck": "false"}),
        }
        help_texts = {
            "api_url": "The full chat completions URL; choosing a provider fills in its usual shape.",
            "default_model": "Used when a request names no model. OpenAI: gpt-4o when empty. Required for Other.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.has_api_key:
            self.fields["api_key"].help_text = "A key is stored. Leave blank to keep it."
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
        # The default-model field is hidden for Azure deployments URLs (the deployment is the model), so a value
        # left in it from another provider must not turn into an error the user cannot see.
        if cleaned.get("provider") == Provider.AZURE and is_azure_deployments_url(cleaned.get("api_url") or ""):
            cleaned["default_model"] = ""
        if cleaned.get("provider") != Provider.OPENAI:
            cleaned["organization_id"] = cleaned["project_id"] = ""
        if cleaned.get("api_key"):
            problem = api_key_error(cleaned["api_key"])
            if problem:
                self.add_error("api_key", problem)
            else:
                self.instance.api_key = cleaned["api_key"]
        return cleaned
