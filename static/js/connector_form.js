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
    const azureDeployments = value === "Azure OpenAI" && /\/openai\/deployments\//.test(url.value);
    show("default_model", !azureDeployments);
    show("organization_id", value === "OpenAI");
    show("project_id", value === "OpenAI");
  }
  provider.addEventListener("change", () => update(true));
  url.addEventListener("input", () => update(false));
  update(!url.value);
})();
