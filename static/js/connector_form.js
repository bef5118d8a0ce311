// Show the fields that apply to the chosen provider and offer its default URL.
(function () {
  "use strict";
  const form = document.querySelector("[data-connector-form]");
  if (!form) return;
  const provider = form.querySelector("[name=provider]");
  const url = form.querySelector("[name=api_url]");
  const defaults = {
    "OpenAI": form.dataset.defaultUrlOpenai,
    "Azure OpenAI": form.dataset.defaultUrlAzure,
    "Other": form.dataset.defaultUrlOther,
  };
  const isDefault = (value) => !value || Object.values(defaults).includes(value);
  const show = (name, visible) => {
    const row = form.querySelector(`[data-field="${name}"]`);
    if (row) row.hidden = !visible;
  };
  function update(prefill) {
    const value = provider.value;
    if (prefill && isDefault(url.value.trim())) url.value = defaults[value] || "";
    show("organization_id", value === "OpenAI");
    show("project_id", value === "OpenAI");
    // Kibana's Other-only keys: TLS verification, native function calling, PKI for mutual TLS.
    for (const name of ["verification_mode", "enable_native_function_calling", "certificate_file",
                        "private_key_file", "ca_file", "remove_pki"]) {
      show(name, value === "Other");
    }
  }
  provider.addEventListener("change", () => update(true));
  url.addEventListener("input", () => update(false));
  update(!url.value);
})();
