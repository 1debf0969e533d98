// The Instances pages: polled fragments swap only when they changed, and an instance's
// page streams the log of its current (or chosen) job from the API's Server-Sent Events.
(() => {
  // --- polling without churn: an unchanged answer keeps the DOM, focus and selection -----
  const lastAnswer = new WeakMap();
  document.addEventListener("htmx:beforeSwap", (event) => {
    const target = event.detail.target;
    if (!target || !target.hasAttribute("data-poll") || event.detail.isError) return;
    const text = event.detail.serverResponse;
    if (lastAnswer.get(target) === text) {
      event.detail.shouldSwap = false;
      return;
    }
    lastAnswer.set(target, text);
  });

  // A refused action (say a 409 from a page that was out of date) shows its message in the
  // error slot; the buttons are then redrawn from the instance's real state.
  document.addEventListener("htmx:responseError", (event) => {
    const live = document.getElementById("instance-live");
    if (!live || !live.contains(event.detail.elt) || event.detail.elt === live) return;
    lastAnswer.delete(live);
    htmx.trigger(live, "refresh");
  });

  // --- the live log ---------------------------------------------------------------------
  let source = null; // the EventSource of the job shown
  let shown = null; // its id, as a string
  let lastState = "";
  let following = true; // show whichever job is the instance's current one

  const summary = () => document.querySelector("#instance-live .instance-summary");
  const logBox = () => document.getElementById("job-log");

  function refreshLive() {
    const live = document.getElementById("instance-live");
    if (live && window.htmx) htmx.trigger(live, "refresh");
  }

  function setLogState(state) {
    const badge = document.getElementById("log-state");
    lastState = state || "";
    badge.hidden = !state;
    badge.textContent = lastState;
    badge.className = state ? `badge job job-${state}` : "badge job";
  }

  // Follows the end of the log unless the reader scrolled up to read.
  function append(text, className) {
    const pre = logBox();
    const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    const span = document.createElement("span");
    span.className = className;
    span.textContent = text;
    pre.append(span);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }

  function appendEnd(text) {
    const pre = logBox();
    const needsBreak = pre.textContent !== "" && !pre.textContent.endsWith("\n");
    append(`${needsBreak ? "\n" : ""}${text}\n`, "log-end");
  }

  function markSelected() {
    document.querySelectorAll("#instance-jobs tr.job-row").forEach((row) => {
      const selected = row.dataset.jobId === shown;
      row.classList.toggle("selected", selected);
      const button = row.querySelector("button.show-log");
      if (button) button.setAttribute("aria-pressed", selected ? "true" : "false");
    });
    const info = summary();
    const current = info ? info.dataset.currentJob : "";
    const follow = document.getElementById("follow-latest");
    if (follow) follow.hidden = following || !current || current === shown;
  }

  function stop() {
    if (source) source.close();
    source = null;
  }

  function show(jobId, phase) {
    stop();
    shown = String(jobId);
    const pre = logBox();
    pre.replaceChildren();
    pre.dataset.empty = "No output yet.";
    document.getElementById("log-job").textContent = `${phase} #${jobId}`;
    setLogState("");
    markSelected();
    const events = new EventSource(`/api/v1/jobs/${encodeURIComponent(jobId)}/events`);
    source = events;
    // A reconnect replays the log from its start, so start again from an empty box.
    events.addEventListener("open", () => {
      if (source === events) pre.replaceChildren();
    });
    events.addEventListener("log", (event) => {
      if (source !== events) return;
      const data = JSON.parse(event.data);
      append(data.text, data.stream === "stderr" ? "stderr" : "stdout");
    });
    events.addEventListener("state", (event) => {
      if (source !== events) return;
      setLogState(JSON.parse(event.data).state);
      refreshLive();
    });
    events.addEventListener("end", () => {
      if (source !== events) return;
      stop();
      appendEnd(`── ${phase} #${jobId} ${lastState || "ended"} ──`);
      refreshLive();
    });
    events.addEventListener("error", () => {
      if (source !== events || events.readyState !== EventSource.CLOSED) return; // retrying
      stop();
      appendEnd(`The log of job ${jobId} could not be loaded; it may have been deleted.`);
    });
  }

  // After every swap: follow a new current job, and keep the chosen row marked.
  function sync() {
    const info = summary();
    if (!info) return;
    const current = info.dataset.currentJob;
    if (following && current && current !== shown) {
      show(current, info.dataset.currentPhase);
      return;
    }
    markSelected();
  }

  document.addEventListener("DOMContentLoaded", sync);
  document.addEventListener("htmx:afterSettle", sync);

  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-follow]")) {
      following = true; // a phase you start is the log you want to see
      return;
    }
    const choose = event.target.closest("#instance-jobs tr.job-row");
    if (choose) {
      const info = summary();
      const id = choose.dataset.jobId;
      following = Boolean(info) && id === info.dataset.currentJob;
      if (id !== shown) show(id, choose.dataset.phase);
      else markSelected();
      return;
    }
    if (event.target.closest("#follow-latest")) {
      following = true;
      sync();
    }
  });
})();
