// The Library page: filter, upload with progress, new/rename/delete, and the editor.
// Everything uses the REST API with the session's CSRF token; the folder table is
// re-fetched as an htmx fragment after each change.
(() => {
  const api = "/api/v1/library";

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "";
    } catch (error) {
      return "";
    }
  }

  function currentFolder() {
    const listing = document.querySelector("#listing .listing");
    return listing ? listing.dataset.path : "";
  }

  function showError(message) {
    const slot = document.getElementById("library-error");
    slot.textContent = message;
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      return body.detail.map((item) => item.msg).join("; ");
    } catch (error) {
      return `The server answered ${response.status}.`;
    }
  }

  async function call(method, url, options = {}) {
    const headers = Object.assign({ "X-CSRF-Token": csrfToken() }, options.headers || {});
    const response = await fetch(url, Object.assign({}, options, { method, headers }));
    if (!response.ok) {
      throw new Error(await errorMessage(response));
    }
    return response;
  }

  function refresh(path) {
    const target = path || currentFolder();
    return htmx.ajax("GET", `/library/listing?path=${encodeURIComponent(target)}`, "#listing");
  }

  function join(folder, name) {
    return `${folder}/${name}`;
  }

  // --- live name filter -----------------------------------------------------------------
  document.addEventListener("input", (event) => {
    if (event.target.id !== "name-filter") return;
    const needle = event.target.value.trim().toLowerCase();
    document.querySelectorAll("#listing tr.entry").forEach((row) => {
      row.hidden = needle !== "" && !row.dataset.name.toLowerCase().includes(needle);
    });
  });

  // --- upload with progress ---------------------------------------------------------------
  function upload(files) {
    if (!files || files.length === 0) return;
    const folder = currentFolder();
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    const progress = document.getElementById("upload-progress");
    const status = document.getElementById("upload-status");
    const request = new XMLHttpRequest();
    request.open("POST", `${api}/upload?path=${encodeURIComponent(folder)}`);
    request.setRequestHeader("X-CSRF-Token", csrfToken());
    progress.hidden = false;
    progress.value = 0;
    status.textContent = `Uploading ${files.length} file(s)…`;
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) progress.value = Math.round((event.loaded / event.total) * 100);
    });
    request.addEventListener("load", () => {
      if (request.status >= 200 && request.status < 300) {
        status.textContent = `Uploaded ${files.length} file(s).`;
        refresh(folder);
      } else {
        let message = `Upload failed (${request.status}).`;
        try {
          message = JSON.parse(request.responseText).detail.map((item) => item.msg).join("; ");
        } catch (error) { /* keep the generic message */ }
        status.textContent = "";
        showError(message);
      }
      progress.hidden = true;
    });
    request.addEventListener("error", () => {
      progress.hidden = true;
      showError("The upload was interrupted; check your connection and try again.");
    });
    request.send(form);
  }

  document.addEventListener("dragover", (event) => {
    const zone = event.target.closest && event.target.closest("#dropzone");
    if (!zone) return;
    event.preventDefault();
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    const zone = event.target.closest && event.target.closest("#dropzone");
    if (zone) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    const zone = event.target.closest && event.target.closest("#dropzone");
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("dragging");
    upload(event.dataTransfer.files);
  });
  document.addEventListener("change", (event) => {
    if (event.target.id === "file-input") upload(event.target.files);
  });

  // --- new, rename, delete ----------------------------------------------------------------
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    showError("");
    try {
      if (button.id === "new-folder") {
        const name = window.prompt("Name of the new folder");
        if (!name) return;
        await call("POST", `${api}/folders`, {
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ path: join(currentFolder(), name) }),
        });
        await refresh();
      } else if (button.id === "new-file") {
        const name = window.prompt("Name of the new file", "README.md");
        if (!name) return;
        const path = join(currentFolder(), name);
        await call("PUT", `${api}/file?path=${encodeURIComponent(path)}`, {
          headers: { "Content-Type": "text/plain; charset=utf-8", "If-Match": "*" },
          body: "",
        });
        await refresh();
        htmx.ajax("GET", `/library/preview?path=${encodeURIComponent(path)}`, "#preview");
      } else if (button.classList.contains("rename")) {
        const source = button.dataset.path;
        const oldName = source.split("/").pop();
        const name = window.prompt(`Rename ${oldName} to`, oldName);
        if (!name || name === oldName) return;
        const folder = source.slice(0, source.length - oldName.length - 1);
        await call("POST", `${api}/move`, {
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ source, destination: join(folder, name) }),
        });
        await refresh();
      } else if (button.classList.contains("delete")) {
        const path = button.dataset.path;
        const folder = button.dataset.type === "folder";
        const what = folder ? `the folder ${path} and everything in it` : path;
        if (!window.confirm(`Delete ${what}? This cannot be undone.`)) return;
        await call("DELETE", `${api}/entries?path=${encodeURIComponent(path)}&recursive=${folder}`);
        await refresh();
        const preview = document.querySelector("#preview .preview");
        if (preview && preview.dataset.path === path) {
          document.getElementById("preview").innerHTML = '<p class="muted">Deleted.</p>';
        }
      } else if (button.id === "edit-file") {
        document.getElementById("editor-form").hidden = false;
        document.getElementById("preview-body").hidden = true;
        button.hidden = true;
        document.getElementById("editor").focus();
      } else if (button.id === "cancel-edit") {
        const preview = document.querySelector("#preview .preview");
        htmx.ajax("GET", `/library/preview?path=${encodeURIComponent(preview.dataset.path)}`, "#preview");
      }
    } catch (error) {
      showError(error.message);
    }
  });

  // --- the editor: save with If-Match, a clear message on a conflict -------------------------
  document.addEventListener("submit", async (event) => {
    if (event.target.id !== "editor-form") return;
    event.preventDefault();
    const preview = document.querySelector("#preview .preview");
    const slot = document.getElementById("editor-form-error");
    const status = document.getElementById("editor-status");
    slot.textContent = "";
    const response = await fetch(`${api}/file?path=${encodeURIComponent(preview.dataset.path)}`, {
      method: "PUT",
      headers: {
        "X-CSRF-Token": csrfToken(),
        "Content-Type": "text/plain; charset=utf-8",
        "If-Match": preview.dataset.etag,
      },
      body: document.getElementById("editor").value,
    });
    if (response.status === 412) {
      slot.textContent = "Someone changed this file since you opened it. Copy your text, " +
        "press Cancel to load the new version, and apply your change again.";
      return;
    }
    if (!response.ok) {
      slot.textContent = await errorMessage(response);
      return;
    }
    preview.dataset.etag = response.headers.get("ETag");
    status.textContent = "Saved.";
    htmx.ajax("GET", `/library/preview?path=${encodeURIComponent(preview.dataset.path)}`, "#preview");
    refresh();
  });
})();
