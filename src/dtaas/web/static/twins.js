// The Digital Twins pages: the new-DT form shows the choice that matches "Start from"; the
// configuration form is checked by the server, which marks each bad field, except for text
// in a number field that the browser cannot even send (it would arrive as an empty field).
(() => {
  function showOrigin(form) {
    const checked = form.querySelector("input[name='origin']:checked");
    const origin = checked ? checked.value : "template";
    form.querySelectorAll(".origin-choice").forEach((choice) => {
      const active = choice.dataset.origin === origin;
      choice.hidden = !active;
      // Disabled, the other choice is not posted at all.
      choice.querySelectorAll("select").forEach((select) => {
        select.disabled = !active;
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("new-twin-form");
    if (form) showOrigin(form);
  });

  document.addEventListener("change", (event) => {
    if (event.target.name === "origin") showOrigin(event.target.form);
  });

  function markField(input, message) {
    const id = `${input.id}-error`;
    let slot = document.getElementById(id);
    if (!slot) {
      slot = document.createElement("small");
      slot.id = id;
      slot.className = "field-error";
      input.insertAdjacentElement("afterend", slot);
    }
    slot.textContent = message;
    input.setAttribute("aria-invalid", "true");
    const described = (input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
    if (!described.includes(id)) input.setAttribute("aria-describedby", [id, ...described].join(" "));
  }

  document.addEventListener("htmx:configRequest", (event) => {
    if (event.detail.elt.id !== "config-form") return;
    const unreadable = [...event.detail.elt.querySelectorAll("input[type='number']")].filter(
      (input) => input.validity.badInput,
    );
    if (unreadable.length === 0) return;
    event.preventDefault();
    for (const input of unreadable) {
      markField(input, input.step === "1" ? "This is not a whole number." : "This is not a number; write e.g. 12.5.");
    }
    unreadable[0].focus();
  });

  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target.id !== "configurations") return;
    const invalid = event.detail.target.querySelector("[aria-invalid='true']");
    if (invalid) invalid.focus();
  });
})();
