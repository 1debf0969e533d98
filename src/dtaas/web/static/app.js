// Behaviour of the server-rendered pages; no inline scripts, so a strict CSP stays possible.

// Swap 4xx/5xx fragments too: the server retargets them into the form's error slot.
document.addEventListener("DOMContentLoaded", () => {
  if (window.htmx) {
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "[45]..", swap: true, error: true },
    ];
  }
});

// A new attempt clears the previous error and notice of the same form or button, so an
// old error never stands next to a new success.
document.addEventListener("htmx:beforeRequest", (event) => {
  const elt = event.detail.elt;
  const headers = (event.detail.requestConfig && event.detail.requestConfig.headers) || {};
  const slots = [];
  if (elt.id) slots.push(`#${elt.id}-error`, `#${elt.id}-result`);
  if (headers["X-Error-Target"]) slots.push(headers["X-Error-Target"]);
  for (const selector of slots) {
    const slot = document.querySelector(selector);
    if (slot) slot.replaceChildren();
  }
});

// A network failure leaves no response to swap: say so in the form's error slot.
document.addEventListener("htmx:sendError", (event) => {
  const elt = event.detail.elt;
  const slot = elt.id && document.getElementById(`${elt.id}-error`);
  if (slot) slot.textContent = "The server did not answer; check your connection and try again.";
});

// Copy buttons: the clipboard API needs a secure context; elsewhere select the text.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const done = (label) => {
    button.textContent = label;
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(source.textContent.trim()).then(
      () => done("Copied"),
      () => done("Copy failed"),
    );
  } else {
    window.getSelection().selectAllChildren(source);
    done("Press Ctrl+C");
  }
});
