// The Library page: filter, upload with progress, new/rename/delete, and the editor.
// Everything uses the REST API with the session's CSRF token; the folder table is
// re-fetched as an htmx fragment after each change.
(() => {
  // htmx's back button puts a saved copy of the page back, this script tag included; the
  // listeners below live on the document, so a second run would answer every click twice.
  if (window.dtaasLibraryReady) return;
  window.dtaasLibraryReady = true;
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

  function currentPreview() {
    return document.querySelector("#preview .preview");
  }

  // An error replaces the last one; `action` is an optional button offered beside it.
  function showError(message, action) {
    const slot = document.getElementById("library-error");
    slot.replaceChildren();
    if (!message) return;
    const text = document.createElement("span");
    text.textContent = message;
    slot.append(text);
    if (action) slot.append(action);
    const box = slot.getBoundingClientRect();
    if (box.top < 0 || box.bottom > window.innerHeight) slot.scrollIntoView({ block: "nearest" });
  }

  function messageOf(body, status) {
    try {
      return body.detail.map((item) => item.msg).join("; ");
    } catch (error) {
      return `The server answered ${status}; try again.`;
    }
  }

  async function errorMessage(response) {
    try {
      return messageOf(await response.json(), response.status);
    } catch (error) {
      return `The server answered ${response.status}; try again.`;
    }
  }

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function call(method, url, options = {}) {
    const headers = Object.assign({ "X-CSRF-Token": csrfToken() }, options.headers || {});
    let response;
    try {
      response = await fetch(url, Object.assign({}, options, { method, headers }));
    } catch (error) {
      throw new ApiError("The server did not answer; check your connection and try again.", 0);
    }
    if (!response.ok) {
      throw new ApiError(await errorMessage(response), response.status);
    }
    return response;
  }

  function refresh(path) {
    const target = path || currentFolder();
    return htmx.ajax("GET", `/library/listing?path=${encodeURIComponent(target)}`, "#listing");
  }

  function showPreview(path) {
    return htmx.ajax("GET", `/library/preview?path=${encodeURIComponent(path)}`, "#preview");
  }

  function join(folder, name) {
    return `${folder}/${name}`;
  }

  // A name is one path component; say so here rather than get a puzzling server error.
  function askName(question, initial) {
    const answer = window.prompt(question, initial);
    if (answer === null) return null;
    const name = answer.trim();
    if (!name) return null;
    if (name.includes("/")) {
      showError(`The name ${name} contains '/'; give a name without slashes.`);
      return null;
    }
    return name;
  }

  function rowNamed(name) {
    return Array.from(document.querySelectorAll("#listing tr.entry")).find(
      (row) => row.dataset.name === name,
    );
  }

  // --- live name filter -----------------------------------------------------------------
  document.addEventListener("input", (event) => {
    if (event.target.id !== "name-filter") return;
    const needle = event.target.value.trim().toLowerCase();
    let shown = 0;
    const rows = document.querySelectorAll("#listing tr.entry");
    rows.forEach((row) => {
      row.hidden = needle !== "" && !row.dataset.name.toLowerCase().includes(needle);
      if (!row.hidden) shown += 1;
    });
    const none = document.getElementById("no-match");
    if (none) none.hidden = shown > 0 || rows.length === 0;
  });

  // --- upload with progress ---------------------------------------------------------------
  function setUploadStatus(text) {
    const status = document.getElementById("upload-status");
    if (status) status.textContent = text;
  }

  // `folder` is fixed when the files are chosen: a later "Replace" goes where they went.
  function upload(files, folder = currentFolder(), overwrite = false) {
    if (!files || files.length === 0) return;
    files = Array.from(files);
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    const progress = document.getElementById("upload-progress");
    const request = new XMLHttpRequest();
    const query = `path=${encodeURIComponent(folder)}${overwrite ? "&overwrite=true" : ""}`;
    request.open("POST", `${api}/upload?${query}`);
    request.setRequestHeader("X-CSRF-Token", csrfToken());
    showError("");
    progress.hidden = false;
    progress.value = 0;
    const count = files.length === 1 ? files[0].name : `${files.length} files`;
    setUploadStatus(`Uploading ${count}…`);
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) progress.value = Math.round((event.loaded / event.total) * 100);
    });
    request.addEventListener("load", async () => {
      progress.hidden = true;
      if (request.status >= 200 && request.status < 300) {
        // The refreshed table brings a new dropzone, so the status is set after it. Someone
        // who went to another folder meanwhile stays there.
        if (currentFolder() === folder) {
          await refresh(folder);
          setUploadStatus(`Uploaded ${files.length} file(s).`);
        } else {
          setUploadStatus(`Uploaded ${files.length} file(s) to ${folder}.`);
        }
        return;
      }
      let body = null;
      try {
        body = JSON.parse(request.responseText);
      } catch (error) { /* not JSON: the generic message below */ }
      setUploadStatus("");
      if (request.status === 409 && !overwrite) {
        const replace = document.createElement("button");
        replace.type = "button";
        replace.className = "outline small";
        replace.id = "replace-upload";
        replace.textContent = files.length === 1 ? "Replace it" : "Replace them";
        replace.addEventListener("click", () => upload(files, folder, true));
        const message = messageOf(body, request.status).replace(
          /; upload with overwrite to replace it\.?$/,
          ".",
        );
        showError(message, replace);
      } else {
        showError(body ? messageOf(body, request.status) : `Upload failed (${request.status}).`);
      }
    });
    request.addEventListener("error", () => {
      progress.hidden = true;
      setUploadStatus("");
      showError("The upload was interrupted; check your connection and try again.");
    });
    request.send(form);
  }

  function dropzoneOf(event) {
    return event.target.closest ? event.target.closest("#dropzone") : null;
  }

  function carriesFiles(event) {
    return event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
  }

  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (event) => {
      const zone = dropzoneOf(event);
      if (zone) {
        event.preventDefault();
        zone.classList.add("dragging");
      } else if (carriesFiles(event)) {
        // A file dropped beside the zone must not replace the page with the file.
        event.preventDefault();
        event.dataTransfer.dropEffect = "none";
      }
    });
  }
  document.addEventListener("dragleave", (event) => {
    const zone = dropzoneOf(event);
    if (zone && !zone.contains(event.relatedTarget)) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    const zone = dropzoneOf(event);
    if (!zone) {
      if (carriesFiles(event)) event.preventDefault();
      return;
    }
    event.preventDefault();
    zone.classList.remove("dragging");
    upload(event.dataTransfer.files);
  });
  document.addEventListener("change", (event) => {
    if (event.target.id !== "file-input") return;
    upload(event.target.files);
    event.target.value = "";
  });

  // --- new, rename, delete ----------------------------------------------------------------
  async function newFolder() {
    const name = askName("Name of the new folder");
    if (!name) return;
    await call("POST", `${api}/folders`, {
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ path: join(currentFolder(), name) }),
    });
    await refresh();
  }

  async function newFile() {
    const name = askName("Name of the new file", "README.md");
    if (!name) return;
    const path = join(currentFolder(), name);
    const taken = `${path} already exists; choose another name or open it to edit it.`;
    if (rowNamed(name)) throw new ApiError(taken, 409);
    try {
      // If-Match * creates the file only where nothing exists: the API answers 412 otherwise.
      await call("PUT", `${api}/file?path=${encodeURIComponent(path)}`, {
        headers: { "Content-Type": "text/plain; charset=utf-8", "If-Match": "*" },
        body: "",
      });
    } catch (error) {
      if (error.status === 412) throw new ApiError(taken, 409);
      throw error;
    }
    await refresh();
    await showPreview(path);
  }

  async function rename(button) {
    const source = button.dataset.path;
    const oldName = source.split("/").pop();
    const name = askName(`Rename ${oldName} to`, oldName);
    if (!name || name === oldName) return;
    const folder = source.slice(0, source.length - oldName.length - 1);
    const destination = join(folder, name);
    await call("POST", `${api}/move`, {
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ source, destination }),
    });
    await refresh();
    const preview = currentPreview();
    if (preview && preview.dataset.path === source) await showPreview(destination);
  }

  async function remove(button) {
    const path = button.dataset.path;
    const folder = button.dataset.type === "folder";
    const what = folder ? `the folder ${path} and everything in it` : path;
    if (!window.confirm(`Delete ${what}? This cannot be undone.`)) return;
    await call("DELETE", `${api}/entries?path=${encodeURIComponent(path)}&recursive=${folder}`);
    await refresh();
    const preview = currentPreview();
    if (preview && (preview.dataset.path === path || preview.dataset.path.startsWith(`${path}/`))) {
      document.getElementById("preview").innerHTML =
        '<p class="muted empty-preview">Deleted. Select a file to preview it.</p>';
    }
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button");
    if (!button || !button.closest(".library-grid")) return;
    try {
      if (button.id === "new-folder") {
        showError("");
        await newFolder();
      } else if (button.id === "new-file") {
        showError("");
        await newFile();
      } else if (button.classList.contains("rename")) {
        showError("");
        await rename(button);
      } else if (button.classList.contains("delete")) {
        showError("");
        await remove(button);
      } else if (button.id === "edit-file") {
        document.getElementById("editor-form").hidden = false;
        document.getElementById("preview-body").hidden = true;
        button.hidden = true;
        document.getElementById("editor").focus();
      } else if (button.id === "cancel-edit") {
        await showPreview(currentPreview().dataset.path);
      }
    } catch (error) {
      showError(error.message);
    }
  });

  // Moving to another folder or file leaves an old error (and its Replace button) behind.
  document.addEventListener("htmx:beforeRequest", (event) => {
    if (event.detail.elt.closest && event.detail.elt.closest(".library-grid")) showError("");
  });

  // On a phone the preview sits under the list: bring a newly opened file into view.
  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target.id !== "preview") return;
    const box = event.detail.target.getBoundingClientRect();
    if (box.top < 0 || box.top > window.innerHeight * 0.75) {
      event.detail.target.scrollIntoView({ block: "start" });
    }
  });

  // --- the editor: save with If-Match, a clear message on a conflict -------------------------
  document.addEventListener("submit", async (event) => {
    if (event.target.id !== "editor-form") return;
    event.preventDefault();
    const preview = currentPreview();
    const slot = document.getElementById("editor-form-error");
    const status = document.getElementById("editor-status");
    const save = document.getElementById("save-file");
    slot.textContent = "";
    status.textContent = "Saving…";
    save.disabled = true;
    let response;
    try {
      response = await fetch(`${api}/file?path=${encodeURIComponent(preview.dataset.path)}`, {
        method: "PUT",
        headers: {
          "X-CSRF-Token": csrfToken(),
          "Content-Type": "text/plain; charset=utf-8",
          "If-Match": preview.dataset.etag,
        },
        body: document.getElementById("editor").value,
      });
    } catch (error) {
      response = null;
    } finally {
      save.disabled = false;
      status.textContent = "";
    }
    if (response === null) {
      slot.textContent = "The server did not answer; your text is still here. Try again.";
      return;
    }
    if (response.status === 412) {
      const reason = await errorMessage(response);
      slot.textContent = reason.includes("no longer exists")
        ? `${reason} Copy your text and create the file again.`
        : "Someone changed this file since you opened it. Copy your text, press Cancel " +
          "to load the new version, and apply your change again.";
      return;
    }
    if (!response.ok) {
      slot.textContent = await errorMessage(response);
      return;
    }
    preview.dataset.etag = response.headers.get("ETag");
    await showPreview(preview.dataset.path);
    const saved = document.getElementById("preview-saved");
    if (saved) saved.textContent = "Saved.";
    refresh();
  });
})();
