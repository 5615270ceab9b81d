"use strict";
// lmforge chat: streams replies from the OpenAI-compatible API of the server this page comes from.
// Every URL is relative, so the page works behind any host, port or proxy. Model text is only
// ever assigned with textContent: it is shown, never parsed as HTML.
(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    model: $("model"), system: $("system"), temperature: $("temperature"), topP: $("top_p"),
    topK: $("top_k"), maxTokens: $("max_tokens"), apiKey: $("api_key"), messages: $("messages"),
    status: $("status"), composer: $("composer"), input: $("input"), send: $("send"),
    stop: $("stop"), reset: $("reset"),
  };

  const history = []; // the conversation resent with every request: {role, content}
  let controller = null; // aborts the reply being streamed
  let conversation = 0; // bumped by reset, so a reply that ends later cannot write to a new chat

  function headers() {
    const result = { "Content-Type": "application/json" };
    const key = ui.apiKey.value.trim();
    if (key) result.Authorization = `Bearer ${key}`;
    return result;
  }

  function setStatus(text) {
    ui.status.textContent = text;
  }

  function setBusy(busy) {
    document.body.dataset.busy = String(busy);
    ui.send.disabled = busy;
    ui.stop.disabled = !busy;
  }

  function scrollToEnd() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function addMessage(role, text) {
    const div = document.createElement("div");
    div.className = `message ${role}`;
    div.textContent = text;
    ui.messages.appendChild(div);
    scrollToEnd();
    return div;
  }

  function showError(bubble, message) {
    const span = document.createElement("span");
    span.className = "error";
    span.textContent = message;
    bubble.appendChild(span);
  }

  function number(input, parse) {
    const value = parse(input.value);
    return Number.isFinite(value) ? value : undefined;
  }

  function requestBody() {
    const messages = [];
    const system = ui.system.value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...history);
    return {
      model: ui.model.value,
      messages,
      stream: true,
      temperature: number(ui.temperature, parseFloat),
      top_p: number(ui.topP, parseFloat),
      top_k: number(ui.topK, (v) => parseInt(v, 10)),
      max_tokens: number(ui.maxTokens, (v) => parseInt(v, 10)),
    };
  }

  async function errorMessage(response) {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      const message = body.error?.message ?? body.message ?? body.detail;
      if (message) return typeof message === "string" ? message : JSON.stringify(message);
    } catch (_) {
      // not JSON: fall back to the raw text below
    }
    return text || `${response.status} ${response.statusText}`;
  }

  // Yields the JSON payload of each server-sent event until [DONE] or the end of the body.
  async function* serverEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }

  async function send(text) {
    const mine = conversation;
    history.push({ role: "user", content: text });
    addMessage("user", text);
    const bubble = addMessage("assistant", "");
    bubble.classList.add("streaming");
    controller = new AbortController();
    setBusy(true);
    setStatus("Generating…");
    let reply = "";
    let finish = null;
    try {
      const response = await fetch("v1/chat/completions", {
        method: "POST",
        headers: headers(),
        body: JSON.stringify(requestBody()),
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      for await (const event of serverEvents(response)) {
        if (event.error) throw new Error(event.error.message ?? "The server failed.");
        const choice = event.choices?.[0];
        const delta = choice?.delta?.content;
        if (delta) {
          reply += delta;
          bubble.textContent = reply;
          scrollToEnd();
        }
        if (choice?.finish_reason) finish = choice.finish_reason;
      }
      setStatus(finish === "length" ? "Stopped at the token limit." : "");
    } catch (err) {
      if (err.name === "AbortError") {
        setStatus("Stopped.");
      } else {
        showError(bubble, err.message);
        setStatus("The reply failed.");
      }
    } finally {
      bubble.classList.remove("streaming");
      if (mine === conversation) {
        // A partial reply stays in the history as the user saw it; a request that produced
        // nothing is dropped, so the next one does not carry two user turns in a row.
        if (reply) history.push({ role: "assistant", content: reply });
        else history.pop();
        controller = null;
        setBusy(false);
      }
    }
  }

  async function loadModels() {
    try {
      const response = await fetch("v1/models", { headers: headers() });
      if (!response.ok) throw new Error(await errorMessage(response));
      const { data } = await response.json();
      const selected = ui.model.value;
      ui.model.replaceChildren(
        ...data.map(({ id }) => {
          const option = document.createElement("option");
          option.value = id;
          option.textContent = id;
          return option;
        }),
      );
      if (data.some(({ id }) => id === selected)) ui.model.value = selected;
      if (!data.length) setStatus("The server serves no model yet.");
      else if (ui.status.textContent.startsWith("Cannot list")) setStatus("");
    } catch (err) {
      setStatus(`Cannot list the models: ${err.message}`);
    }
  }

  function reset() {
    conversation += 1;
    controller?.abort();
    controller = null;
    history.length = 0;
    ui.messages.replaceChildren();
    setBusy(false);
    setStatus("");
    ui.input.focus();
  }

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.input.value.trim();
    if (!text || controller) return;
    if (!ui.model.value) {
      setStatus("No model to talk to: check the server and the API key.");
      return;
    }
    ui.input.value = "";
    send(text);
  });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  ui.stop.addEventListener("click", () => controller?.abort());
  ui.reset.addEventListener("click", reset);
  ui.apiKey.addEventListener("change", loadModels);

  setBusy(false);
  loadModels();
})();
