// The test tab: check the JSON locally, send it as sub-action "test", show the response or the error.
(function () {
  "use strict";
  const form = document.querySelector("[data-test-form]");
  if (!form) return;
  const body = form.querySelector("textarea");
  const button = form.querySelector("[data-test-run]");
  const status = form.querySelector("[data-test-status]");
  const result = document.querySelector("[data-test-result]");
  const summary = document.querySelector("[data-test-summary]");
  const output = document.querySelector("[data-test-output]");
  const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;

  function show(ok, text, details) {
    result.hidden = false;
    result.classList.toggle("ok", ok);
    result.classList.toggle("failed", !ok);
    summary.textContent = text;
    output.textContent = details;
  }

  async function run(event) {
    if (event) event.preventDefault();
    try {
      JSON.parse(body.value);
    } catch (error) {
      show(false, "The body is not valid JSON, nothing was sent.", error.message);
      return;
    }
    button.disabled = true;
    status.textContent = "Running…";
    try {
      const response = await fetch(form.dataset.url, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({ body: body.value }),
        credentials: "same-origin",
      });
      const payload = await response.json();
      const usage = payload.usage || {};
      const parts = [`${payload.status === "ok" ? "Succeeded" : "Failed"} in ${Math.round(payload.duration_ms)} ms`];
      if (usage.total_tokens !== undefined) {
        parts.push(`tokens: ${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion = ${usage.total_tokens}`);
      }
      if (payload.status === "ok") {
        show(true, parts.join(" · "), JSON.stringify(payload.data, null, 2));
      } else {
        const detail = [payload.message, payload.service_message].filter(Boolean).join("\n");
        show(false, parts.join(" · "), detail);
      }
    } catch (error) {
      show(false, "The request did not complete.", String(error));
    } finally {
      button.disabled = false;
      status.textContent = "";
    }
  }

  form.addEventListener("submit", run);
  if (form.dataset.autorun) run();
})();
