// The playground: posts the prompt once per model and appends each streamed piece as text (never as HTML).
(function () {
  "use strict";
  const form = document.getElementById("playground");
  if (!form) return;

  function show(out, message) {
    out.classList.add("error");
    out.append(message);
  }

  function handle(out, payload) {
    if (payload === "[DONE]") return;
    const chunk = JSON.parse(payload);
    if (chunk.error) return show(out, chunk.error.message);
    const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
    if (delta && delta.content) out.append(delta.content);  // a text node: markup stays literal
  }

  async function run(side, model, data) {
    const out = document.getElementById(side + "-answer");
    document.getElementById(side + "-name").textContent = model;
    out.textContent = "";
    out.classList.remove("error");
    out.dataset.done = "false";
    const body = new FormData();
    ["csrf_token", "prompt", "temperature", "max_tokens"].forEach(function (k) { body.append(k, data.get(k)); });
    body.append("model", model);
    try {
      const resp = await fetch(form.action, { method: "POST", body: body, credentials: "same-origin" });
      if (!resp.ok) {
        let message = resp.status + " " + resp.statusText;
        try { message = (await resp.json()).error.message; } catch (err) { /* not JSON: keep the status */ }
        return show(out, message);
      }
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const part = await reader.read();
        if (part.done) break;
        buffer += decoder.decode(part.value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          event.split("\n").filter(function (l) { return l.startsWith("data: "); })
            .forEach(function (l) { handle(out, l.slice(6)); });
        }
      }
    } catch (err) {
      show(out, "The connection failed: " + err);
    } finally {
      out.dataset.done = "true";
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const data = new FormData(form);
    const send = document.getElementById("send");
    send.disabled = true;
    Promise.all([run("left", data.get("left_model"), data), run("right", data.get("right_model"), data)])
      .finally(function () { send.disabled = false; });
  });
})();
