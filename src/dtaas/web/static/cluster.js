// The cluster page: fills in the Ray cluster's nodes and resources from the admin API, and
// refreshes them. The page itself is rendered without asking the cluster, so a dead one
// never holds it up; this script says "unreachable" and why.
(() => {
  const section = document.getElementById("cluster-status");
  if (!section) return;
  const api = section.dataset.api;
  const refreshMs = Number(section.dataset.refreshSeconds || 5) * 1000;
  const GiB = 1024 ** 3;

  const number = (value) => (Number.isInteger(value) ? String(value) : value.toFixed(1));
  const amount = (key, value) => (key === "memory_bytes" ? `${(value / GiB).toFixed(1)} GiB` : number(value));

  function setText(id, selector, text) {
    const element = document.querySelector(`#${id} ${selector}`);
    if (element) element.textContent = text;
  }

  function showReach(reachable, text) {
    const badge = document.getElementById("cluster-state");
    badge.textContent = text;
    badge.className = `badge ${reachable ? "ok" : "down"}`;
    document.getElementById("cluster-checked").textContent = `checked ${new Date().toLocaleTimeString()}`;
  }

  function showResource(key, use) {
    const tile = document.getElementById(`cluster-${key}`);
    const meter = tile.querySelector("progress");
    if (!use || use.total === 0) {
      setText(`cluster-${key}`, ".tile-value", use ? "none" : "–");
      setText(`cluster-${key}`, ".tile-detail", use ? "no node has any" : "");
      meter.value = 0;
      return;
    }
    setText(`cluster-${key}`, ".tile-value", `${amount(key, use.used)} of ${amount(key, use.total)} used`);
    setText(`cluster-${key}`, ".tile-detail", `${amount(key, use.free)} free`);
    meter.value = use.used / use.total;
  }

  function cell(label, text) {
    const td = document.createElement("td");
    td.dataset.label = label;
    td.textContent = text;
    return td;
  }

  function nodeRow(node) {
    const row = document.createElement("tr");
    row.className = `node-row${node.alive ? "" : " inactive"}`;
    row.dataset.nodeId = node.node_id;
    const name = document.createElement("td");
    name.className = "primary";
    const address = document.createElement("strong");
    address.textContent = node.address;
    const id = document.createElement("small");
    id.textContent = ` ${node.node_id.slice(0, 12)}`;
    id.title = node.node_id;
    name.append(address, id);
    if (node.is_head) {
      const head = document.createElement("span");
      head.className = "badge";
      head.textContent = "head";
      name.append(" ", head);
    }
    const used = (key) => (node[key].total === 0 ? "none" : `${amount(key, node[key].used)} of ${amount(key, node[key].total)}`);
    row.append(
      name,
      cell("State", node.alive ? "alive" : "dead"),
      cell("CPUs used", used("cpus")),
      cell("GPUs used", used("gpus")),
      cell("Memory used", used("memory_bytes")),
    );
    return row;
  }

  function emptyRow(text) {
    const row = document.createElement("tr");
    row.className = "empty";
    const td = document.createElement("td");
    td.colSpan = 5;
    td.textContent = text;
    row.append(td);
    return row;
  }

  function show(cluster) {
    document.getElementById("cluster-problem").textContent = cluster.problem || "";
    showReach(cluster.reachable, cluster.reachable ? "reachable" : "unreachable");
    const nodes = cluster.reachable ? String(cluster.nodes_alive) : "–";
    setText("cluster-nodes", ".tile-value", nodes);
    setText("cluster-nodes", ".tile-detail", cluster.reachable ? `${cluster.nodes_dead} dead` : "");
    for (const key of ["cpus", "gpus", "memory_bytes"]) showResource(key, cluster[key]);
    const rows = document.getElementById("cluster-node-rows");
    if (!cluster.reachable) rows.replaceChildren(emptyRow("The cluster did not answer."));
    else if (cluster.nodes.length === 0) rows.replaceChildren(emptyRow("The cluster has no nodes."));
    else rows.replaceChildren(...cluster.nodes.map(nodeRow));
  }

  async function refresh() {
    try {
      const response = await fetch(api, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      const body = await response.json();
      if (!response.ok) {
        const message = (body.detail || []).map((item) => item.msg).join("; ");
        throw new Error(message || `the platform answered ${response.status}`);
      }
      show(body);
    } catch (error) {
      showReach(false, "unknown");
      document.getElementById("cluster-problem").textContent = `The platform could not say: ${error.message}`;
    }
    window.setTimeout(refresh, refreshMs);
  }

  refresh();
})();
