// The Explore page: a uPlot chart per telemetry field, loaded downsampled from the API and
// extended live from its Server-Sent Events; the same field of another instance overlaid;
// the latest job's log; CSV previews plotted. window.dtaasExplore exposes the charts.
(() => {
  const INITIAL_POINTS = 1000; // rows asked of the API per field (min/max/mean per bucket)
  const MAX_POINTS = 20000; // points kept per chart; the oldest go first
  const HEIGHT = 220;
  const COLORS = { mean: "#0b5a8a", band: "rgba(11, 90, 138, 0.12)", edge: "rgba(11, 90, 138, 0.35)", other: "#c2410c" };

  const config = JSON.parse(document.getElementById("explore-config").textContent);
  const instanceId = config.instanceId;
  const charts = new Map(); // field -> chart
  const declared = new Map(config.fields.map((item) => [item.field, item]));
  let compare = null; // { id, stream } while comparing
  window.dtaasExplore = { charts };

  const $ = (id) => document.getElementById(id);

  function setStatus(state, text) {
    const badge = $("live-status");
    badge.dataset.state = state;
    badge.textContent = text;
  }

  function showError(text) {
    $("telemetry-error").textContent = text || "";
  }

  async function problem(response) {
    try {
      const body = await response.json();
      return body.detail.map((item) => item.msg).join("; ");
    } catch {
      return `the server answered ${response.status}`;
    }
  }

  // --- series: columns sorted by time ------------------------------------------------------
  const emptySeries = () => ({ t: [], avg: [], min: [], max: [] });

  // Inserts keeping t ascending (uPlot needs it); live points nearly always go last.
  function insert(series, t, v) {
    let at = series.t.length;
    if (at && series.t[at - 1] > t) {
      let low = 0;
      while (low < at) {
        const mid = (low + at) >> 1;
        if (series.t[mid] <= t) low = mid + 1;
        else at = mid;
      }
    }
    for (const [key, value] of [["t", t], ["avg", v], ["min", v], ["max", v]]) series[key].splice(at, 0, value);
    const extra = series.t.length - MAX_POINTS;
    if (extra > 0) for (const key of ["t", "avg", "min", "max"]) series[key].splice(0, extra);
  }

  async function loadSeries(instance, field) {
    const url = `/api/v1/instances/${encodeURIComponent(instance)}/telemetry?field=${encodeURIComponent(field)}&points=${INITIAL_POINTS}`;
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (response.status === 404) return emptySeries(); // that instance lacks this field
    if (!response.ok) throw new Error(await problem(response));
    const body = await response.json();
    return { t: body.t, avg: body.avg, min: body.min, max: body.max };
  }

  // --- charts -------------------------------------------------------------------------------
  function figureFor(field, label, unit) {
    let figure = document.querySelector(`#charts figure[data-field="${CSS.escape(field)}"]`);
    if (figure) return figure;
    figure = document.createElement("figure");
    figure.className = "chart";
    figure.dataset.field = field;
    const caption = document.createElement("figcaption");
    const name = document.createElement("strong");
    name.textContent = label || field;
    caption.append(name);
    if (unit) caption.append(" ", Object.assign(document.createElement("span"), { className: "muted", textContent: `(${unit})` }));
    const count = Object.assign(document.createElement("span"), { className: "chart-count muted" });
    count.dataset.countFor = field;
    caption.append(" ", count);
    const plot = Object.assign(document.createElement("div"), { className: "chart-plot" });
    plot.dataset.plotFor = field;
    figure.append(caption, plot);
    $("charts").append(figure);
    $("charts-empty").hidden = true;
    return figure;
  }

  function relative(t) {
    const start = t.length ? t[0] : 0;
    return t.map((value) => value - start);
  }

  function columns(chart) {
    const own = chart.series;
    if (!compare) return [own.t, own.avg, own.min, own.max];
    const other = chart.other || emptySeries();
    return uPlot.join([
      [relative(own.t), own.avg, own.min, own.max],
      [relative(other.t), other.avg],
    ]);
  }

  function options(chart, width) {
    const series = [
      { label: compare ? "seconds since start" : "time" },
      { label: compare ? `#${instanceId}` : chart.field, stroke: COLORS.mean, width: 1.5, spanGaps: true },
      { label: "min", stroke: COLORS.edge, width: 1, spanGaps: true },
      { label: "max", stroke: COLORS.edge, width: 1, spanGaps: true },
    ];
    if (compare) series.push({ label: `#${compare.id}`, stroke: COLORS.other, width: 1.5, spanGaps: true });
    return {
      width,
      height: HEIGHT,
      scales: { x: { time: !compare } },
      series,
      bands: [{ series: [3, 2], fill: COLORS.band }],
      axes: [{}, { label: chart.unit || "", size: 60 }],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
    };
  }

  function draw(chart) {
    const holder = chart.figure.querySelector(".chart-plot");
    if (chart.plot) chart.plot.destroy();
    holder.replaceChildren();
    chart.plot = new uPlot(options(chart, holder.clientWidth || 600), columns(chart), holder);
    count(chart);
  }

  function count(chart) {
    const label = chart.figure.querySelector(".chart-count");
    const n = chart.series.t.length;
    label.textContent = n ? `${n} point${n === 1 ? "" : "s"}` : "no points yet";
  }

  // Live points redraw at most once a frame, however many events arrive.
  const dirty = new Set();
  function touch(chart) {
    if (!dirty.size) requestAnimationFrame(flush);
    dirty.add(chart);
  }
  function flush() {
    for (const chart of dirty) {
      chart.plot.setData(columns(chart));
      count(chart);
    }
    dirty.clear();
  }

  function chartFor(field) {
    let chart = charts.get(field);
    if (chart) return chart;
    const { label = "", unit = "" } = declared.get(field) || {};
    chart = { field, label, unit, figure: figureFor(field, label, unit), series: emptySeries(), other: null, plot: null, pending: [], loaded: false };
    charts.set(field, chart);
    draw(chart);
    loadSeries(instanceId, field)
      .then((series) => {
        // Points that arrived while loading: keep those the load did not already hold.
        const last = series.t.length ? series.t[series.t.length - 1] : -Infinity;
        chart.series = series;
        for (const [t, v] of chart.pending) if (t > last) insert(series, t, v);
        chart.pending = [];
        chart.loaded = true;
        if (compare) return loadOther(chart, compare.id);
      })
      .then(() => draw(chart))
      .catch((error) => showError(`The ${field} chart could not be loaded: ${error.message}`));
    return chart;
  }

  function addPoints(data, own) {
    for (const [field, column] of Object.entries(data)) {
      const chart = own ? chartFor(field) : charts.get(field);
      if (!chart) continue; // the other instance's fields that this one has not
      for (let i = 0; i < column.t.length; i++) {
        if (!own) {
          if (chart.other) insert(chart.other, column.t[i], column.v[i]);
        } else if (chart.loaded) insert(chart.series, column.t[i], column.v[i]);
        else chart.pending.push([column.t[i], column.v[i]]);
      }
      if (chart.plot) touch(chart);
    }
  }

  // --- live streams --------------------------------------------------------------------------
  function follow(instance, own, onReady = () => {}) {
    const events = new EventSource(`/api/v1/instances/${encodeURIComponent(instance)}/telemetry/events`);
    events.addEventListener("ready", () => {
      if (own) setStatus("live", "live");
      onReady();
    });
    events.addEventListener("points", (event) => addPoints(JSON.parse(event.data), own));
    events.addEventListener("end", () => {
      events.close();
      if (own) setStatus("ended", "instance deleted");
    });
    events.addEventListener("error", () => {
      onReady(); // the charts load even without a live stream
      if (!own) return;
      setStatus(events.readyState === EventSource.CLOSED ? "ended" : "connecting", events.readyState === EventSource.CLOSED ? "not live" : "reconnecting…");
    });
    return events;
  }

  // --- compare -------------------------------------------------------------------------------
  async function loadOther(chart, otherId) {
    chart.other = await loadSeries(otherId, chart.field);
  }

  async function setCompare(otherId) {
    if (compare) compare.stream.close();
    compare = null;
    $("compare-help").hidden = !otherId;
    if (otherId) {
      compare = { id: otherId, stream: follow(otherId, false) };
      try {
        await Promise.all([...charts.values()].map((chart) => loadOther(chart, otherId)));
      } catch (error) {
        showError(`Instance #${otherId} could not be loaded: ${error.message}`);
      }
    }
    for (const chart of charts.values()) draw(chart);
  }

  // --- the latest job's log ------------------------------------------------------------------
  function followLog(job) {
    const pre = $("job-log");
    const badge = $("log-state");
    const events = new EventSource(`/api/v1/jobs/${encodeURIComponent(job.id)}/events`);
    events.addEventListener("open", () => pre.replaceChildren()); // a reconnect replays from the start
    events.addEventListener("log", (event) => {
      const data = JSON.parse(event.data);
      const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
      pre.append(Object.assign(document.createElement("span"), { className: data.stream, textContent: data.text }));
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    });
    events.addEventListener("state", (event) => {
      const state = JSON.parse(event.data).state;
      badge.hidden = false;
      badge.textContent = state;
      badge.className = `badge job job-${state}`;
      refreshInstance();
    });
    events.addEventListener("end", () => {
      events.close();
      refreshInstance();
      // The job has written what it writes: show its results without a click.
      if (window.htmx) htmx.trigger("#results-refresh", "click");
    });
  }

  // The instance's state badge follows its job (busy while it runs, ready after).
  async function refreshInstance() {
    const response = await fetch(`/api/v1/instances/${encodeURIComponent(instanceId)}`, { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const state = (await response.json()).state;
    const badge = $("instance-state");
    badge.textContent = state;
    badge.className = `badge state state-${state}`;
  }

  // --- CSV previews --------------------------------------------------------------------------
  function plotCsv(holder) {
    const plot = JSON.parse(holder.dataset.plot);
    const names = Object.keys(plot.series);
    const palette = ["#0b5a8a", "#c2410c", "#15803d", "#7c3aed", "#b45309", "#0e7490", "#be185d", "#4b5563"];
    const series = [{ label: plot.x_label }, ...names.map((name, i) => ({ label: name, stroke: palette[i % palette.length], width: 1.5, spanGaps: true }))];
    holder.replaceChildren();
    holder.plot = new uPlot(
      { width: holder.clientWidth || 600, height: 260, scales: { x: { time: false } }, series },
      [plot.x, ...names.map((name) => plot.series[name])],
      holder,
    );
  }

  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target.id !== "result-preview") return;
    const card = $("preview-card");
    const preview = event.detail.target.querySelector(".preview");
    $("preview-path").textContent = preview ? preview.dataset.path : "";
    card.hidden = false;
    event.detail.target.querySelectorAll(".csv-plot[data-plot]").forEach(plotCsv);
    card.scrollIntoView({ behavior: "smooth", block: "start" });
  });
  document.addEventListener("htmx:afterSettle", (event) => {
    if (event.detail.target.id !== "results-list") return;
    $("results-zip").hidden = !event.detail.target.querySelector(".result-row");
  });

  // --- start ---------------------------------------------------------------------------------
  function start() {
    // The stream first, the charts once it is ready: every point stored after the stream's
    // start reaches a chart through it, also while the chart is still loading.
    let loading = false;
    follow(instanceId, true, () => {
      if (loading) return;
      loading = true;
      for (const item of config.fields) chartFor(item.field);
    });
    $("compare-select").addEventListener("change", (event) => setCompare(event.target.value));
    $("preview-close").addEventListener("click", () => {
      $("preview-card").hidden = true;
      $("result-preview").replaceChildren();
    });
    if (config.job) followLog(config.job);
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => {
        for (const chart of charts.values()) {
          const holder = chart.figure.querySelector(".chart-plot");
          chart.plot.setSize({ width: holder.clientWidth || 600, height: HEIGHT });
        }
      }, 150);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
