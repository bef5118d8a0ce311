import re

import pytest
from django.urls import reverse

from connectors.models import Connector, Provider

pytestmark = pytest.mark.django_db

SECRET = "sk-live-SUPERSECRET-0123456789abcdef"


def form_data(**overrides):
    data = {
        "name": "Production OpenAI",
        "provider": "OpenAI",
        "api_url": "https://api.openai.com/v1/chat/completions",
        "default_model": "gpt-4o-mini",
        "organization_id": "",
        "project_id": "",
        "headers": "",
        "api_key": SECRET,
    }
    data.update(overrides)
    return data


def test_admin_creates_a_connector_through_the_form(client, connector_admin):
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:create"), form_data(headers="X-Team: search"), follow=True)
    assert response.status_code == 200
    connector = Connector.objects.get()
    assert connector.name == "Production OpenAI"
    assert connector.headers == {"X-Team": "search"}
    assert connector.created_by == connector_admin
    assert connector.api_key == SECRET
    assert "created" in response.content.decode()
    assert SECRET not in response.content.decode()


def test_the_list_shows_name_provider_host_and_model(client, connector_admin, make_connector):
    make_connector(name="Search assistant", default_model="gpt-4o-mini")
    client.force_login(connector_admin)
    html = client.get(reverse("connectors:list")).content.decode()
    assert "Search assistant" in html and "gpt-4o-mini" in html
    assert "<code data-host>api.<wbr>openai.<wbr>com</code>" in html  # may wrap after a dot, never mid-word


def test_the_empty_list_invites_creating_one(client, connector_admin):
    client.force_login(connector_admin)
    html = client.get(reverse("connectors:list")).content.decode()
    assert "No connectors yet" in html and reverse("connectors:create") in html


def test_editing_without_a_key_keeps_the_stored_key(client, connector_admin, make_connector):
    connector = make_connector(api_key=SECRET)
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:edit", args=[connector.pk]), form_data(name="Renamed", api_key=""))
    assert response.status_code == 302
    connector.refresh_from_db()
    assert connector.name == "Renamed" and connector.api_key == SECRET


def test_editing_with_a_key_replaces_it(client, connector_admin, make_connector):
    connector = make_connector(api_key=SECRET)
    client.force_login(connector_admin)
    client.post(reverse("connectors:edit", args=[connector.pk]), form_data(api_key="sk-new-key"))
    connector.refresh_from_db()
    assert connector.api_key == "sk-new-key"


def test_the_key_is_never_in_any_page(client, connector_admin, make_connector):
    connector = make_connector(api_key=SECRET)
    client.force_login(connector_admin)
    for url in (
        reverse("connectors:list"),
        reverse("connectors:detail", args=[connector.pk]),
        reverse("connectors:edit", args=[connector.pk]),
        reverse("connectors:delete", args=[connector.pk]),
    ):
        html = client.get(url).content.decode()
        assert SECRET not in html, url
        assert connector.encrypted_api_key not in html, url


def test_the_edit_form_never_fills_in_the_key(client, connector_admin, make_connector):
    connector = make_connector(api_key=SECRET)
    client.force_login(connector_admin)
    html = client.get(reverse("connectors:edit", args=[connector.pk])).content.decode()
    field = re.search(r'<input[^>]*name="api_key"[^>]*>', html).group(0)
    assert 'type="password"' in field and "value=" not in field
    assert "Leave blank to keep it" in html


def test_a_form_with_errors_keeps_what_was_typed_except_the_key(client, connector_admin):
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:create"), form_data(api_url="ftp://example.com/x"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "must start with http:// or https://" in html
    assert 'value="Production OpenAI"' in html
    assert SECRET not in html
    assert not Connector.objects.exists()


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        ({"name": "   "}, "name", "This field is required"),
        ({"api_url": "https://{host}/v1"}, "api_url", "Replace {host} in the URL"),
        ({"api_url": "not a url"}, "api_url", "must start with http:// or https://"),
        ({"api_url": "https:///v1/chat"}, "api_url", "must include a hostname"),
        ({"api_url": "http://host:99999/x"}, "api_url", "Enter a valid URL"),
        ({"provider": "Other", "default_model": "", "api_url": "http://localhost:11434/v1/chat/completions"}, "default_model", "default model is required"),
        ({"provider": "Azure OpenAI", "api_url": "https://res.openai.azure.com/v1/chat/completions"}, "api_url", "must look like"),
        ({"provider": "Azure OpenAI", "api_url": "https://res.openai.azure.com/openai/deployments/gpt4/chat/completions"}, "api_url", "api-version"),
        ({"headers": "Bad Header: x"}, "headers", "not a valid header name"),
        ({"headers": "no colon here"}, "headers", "Name: value"),
        ({"api_key": ""}, "api_key", "API key is required"),
    ],
)
def test_each_validation_error_is_shown_on_its_field(client, connector_admin, overrides, field, message):
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:create"), form_data(**overrides))
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors, errors
    assert message.lower() in " ".join(errors[field]).lower()
    assert not Connector.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "https://res.openai.azure.com/openai/deployments/gpt4/chat/completions?api-version=2024-10-21",
        "https://gateway.internal.example/openai/deployments/gpt4/chat/completions?api-version=2024-10-21",
        "https://res.openai.azure.com/openai/v1/chat/completions",
    ],
)
def test_azure_urls_on_any_host_are_accepted(client, connector_admin, url):
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:create"), form_data(provider="Azure OpenAI", api_url=url, default_model=""))
    assert response.status_code == 302, response.context["form"].errors
    assert Connector.objects.get().provider == Provider.AZURE


def test_an_azure_deployments_connector_keeps_its_default_model(client, connector_admin):
    # Kibana accepts and sends defaultModel for Azure.
    client.force_login(connector_admin)
    url = "https://res.openai.azure.com/openai/deployments/gpt4/chat/completions?api-version=2024-10-21"
    client.post(reverse("connectors:create"), form_data(provider="Azure OpenAI", api_url=url, default_model="gpt-4o"))
    assert Connector.objects.get().default_model == "gpt-4o"


def test_delete_asks_then_deletes(client, connector_admin, make_connector):
    connector = make_connector()
    client.force_login(connector_admin)
    assert "Delete “Test connector”?" in client.get(reverse("connectors:delete", args=[connector.pk])).content.decode()
    response = client.post(reverse("connectors:delete", args=[connector.pk]), follow=True)
    assert not Connector.objects.exists()
    assert "deleted" in response.content.decode()


def test_save_and_test_opens_the_test_tab(client, connector_admin):
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:create"), {**form_data(), "save_and_test": "1"})
    connector = Connector.objects.get()
    assert response["Location"] == reverse("connectors:detail", args=[connector.pk]) + "?test=1#test"


def test_an_unknown_connector_is_404(client, connector_admin):
    client.force_login(connector_admin)
    assert client.get(reverse("connectors:detail", args=["no-such-id"])).status_code == 404


def test_the_page_shows_how_to_call_the_connector_from_code_and_the_snippet_works(client, operator, make_connector,
                                                                                 fake_openai):
    import html
    import json

    from connectors.accounts.api_keys import create_api_key

    connector = make_connector(api_url=fake_openai.url("ok"), api_key=SECRET)
    client.force_login(operator)
    page = client.get(reverse("connectors:detail", args=[connector.pk])).content.decode()
    assert f"http://testserver/api/openai/{connector.pk}/v1" in page
    assert reverse("api_keys") in page and "/api/openapi.json" in page
    assert SECRET not in page
    snippet = html.unescape(re.search(r'<pre class="code snippet" id="snippet-kibana" data-snippet="kibana" tabindex="0">(.*?)</pre>', page, re.S).group(1))
    url = re.search(r"curl -X POST '([^']+)'", snippet).group(1)
    body = json.loads(re.search(r"-d '(.*)'", snippet).group(1))
    _record, key = create_api_key(operator, "from the snippet")
    client.logout()
    response = client.post(url.removeprefix("http://testserver"), body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"ApiKey {key}")
    assert response.status_code == 200 and response.json()["status"] == "ok", response.content


def test_the_code_card_is_only_for_those_who_may_run_connectors(client, make_connector, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viv", password="x")
    viewer.user_permissions.add(Permission.objects.get(codename="view_connector"))
    client.force_login(viewer)
    page = client.get(reverse("connectors:detail", args=[make_connector().pk])).content.decode()
    assert "Use it from code" not in page


def test_the_form_refuses_an_api_key_with_spaces_inside(client, connector_admin):
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:create"), form_data(api_key="sk-abc def"))
    assert response.status_code == 200
    assert "cannot contain spaces" in response.content.decode()
    assert not Connector.objects.exists()


def test_each_change_is_reported_with_the_connectors_name(client, connector_admin, make_connector):
    client.force_login(connector_admin)
    created = client.post(reverse("connectors:create"), form_data(name="Made here"), follow=True)
    assert "Connector “Made here” created." in created.content.decode()
    connector = Connector.objects.get(name="Made here")
    saved = client.post(reverse("connectors:edit", args=[connector.pk]), form_data(name="Renamed"), follow=True)
    assert "Connector “Renamed” saved." in saved.content.decode()
    deleted = client.post(reverse("connectors:delete", args=[connector.pk]), follow=True)
    assert "Connector “Renamed” deleted." in deleted.content.decode()
    assert not Connector.objects.filter(pk=connector.pk).exists()
# -- the form's defects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://{resource}.openai.azure.com/openai/deployments/{deployment}/chat/completions?api-version={version}",
         "Replace {resource} in the URL with your Azure OpenAI resource name"),
        ("https://res.openai.azure.com/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21",
         "Replace {deployment} in the URL with your deployment name"),
        ("https://res.openai.azure.com/openai/deployments/gpt4/chat/completions?api-version={version}",
         "Replace {version} in the URL with an API version"),
    ],
)
def test_an_azure_url_still_holding_a_placeholder_is_refused_naming_the_part(client, connector_admin, url, message):
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:create"), form_data(provider="Azure OpenAI", api_url=url, default_model=""))
    assert message in " ".join(response.context["form"].errors["api_url"])
    assert not Connector.objects.exists()


def test_the_azure_shape_is_a_placeholder_not_a_value(client, connector_admin):
    client.force_login(connector_admin)
    html = client.get(reverse("connectors:create")).content.decode()
    assert 'data-placeholder-url-azure="https://{resource}.openai.azure.com/' in html
    assert "data-default-url-azure" not in html
    response = client.post(reverse("connectors:create"), form_data(provider="Azure OpenAI", api_url="", default_model=""))
    assert 'placeholder="https://{resource}.openai.azure.com/' in response.content.decode()


def test_every_aria_describedby_id_exists_and_an_empty_name_has_one_error(client, connector_admin):
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:create"), form_data(name="", api_key="", api_url="not a url"))
    html = response.content.decode()
    referenced = {ref for refs in re.findall(r'aria-describedby="([^"]+)"', html) for ref in refs.split()}
    assert {"id_name_error", "id_api_key_error", "id_api_url_helptext", "id_api_url_error"} <= referenced
    for ref in referenced:
        assert f'id="{ref}"' in html, ref
    assert response.context["form"].errors["name"] == ["This field is required."]


def test_the_api_key_has_a_required_marker_when_the_provider_needs_one(client, connector_admin, make_connector):
    client.force_login(connector_admin)
    html = client.get(reverse("connectors:create")).content.decode()
    marker = re.search(r'<label for="id_api_key">API key <span class="req"[^>]*data-required-marker([^>]*)>', html)
    assert marker and "hidden" not in marker.group(1)
    connector = make_connector(name="Keyed")
    html = client.get(reverse("connectors:edit", args=[connector.pk])).content.decode()
    assert re.search(r'data-required-marker hidden', html)  # a key is stored: leaving it blank keeps it
