// Show the fields that apply to the chosen provider, offer its default URL, and mark the API key as required
// for the providers that need one.
(function () {
  "use strict";
  const form = document.querySelector("[data-connector-form]");
  if (!form) return;
  const provider = form.querySelector("[name=provider]");
  const url = form.querySelector("[name=api_url]");
  const apiKey = form.querySelector("[name=api_key]");
  const keyMarker = form.querySelector('[data-field="api_key"] [data-required-marker]');
  // A usable URL is filled in; Azure's has parts only the user knows ({resource}, ...), so it is only a
  // placeholder, and the server refuses a URL that still holds a {placeholder}.
  const values = {
    "OpenAI": form.dataset.defaultUrlOpenai,
    "Other": form.dataset.defaultUrlOther,
  };
  const placeholders = {
    "Azure OpenAI": form.dataset.placeholderUrlAzure,
  };
  const isDefault = (value) => !value || Object.values(values).includes(value);
  const show = (name, visible) => {
    const row = form.querySelector(`[data-field="${name}"]`);
    if (row) row.hidden = !visible;
  };
  function update(prefill) {
    const value = provider.value;
    if (prefill && isDefault(url.value.trim())) url.value = values[value] || "";
    url.placeholder = placeholders[value] || values[value] || "";
    // Azure takes a default model too (sent where the URL names no deployment, and behind API Management).
    show("organization_id", value === "OpenAI");
    show("project_id", value === "OpenAI");
    // Kibana's Other-only keys: TLS verification, native function calling, PKI for mutual TLS.
    for (const name of ["verification_mode", "enable_native_function_calling", "certificate_file",
                        "private_key_file", "ca_file", "remove_pki"]) {
      show(name, value === "Other");
    }
    const keyRequired = form.dataset.hasApiKey !== "true" && (value === "OpenAI" || value === "Azure OpenAI");
    if (keyMarker) keyMarker.hidden = !keyRequired;
    if (apiKey) apiKey.setAttribute("aria-required", keyRequired ? "true" : "false");
  }
  provider.addEventListener("change", () => update(true));
  url.addEventListener("input", () => update(false));
  update(!url.value);
})();
