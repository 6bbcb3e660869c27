// The live sweep view: progress over a WebSocket, finished runs fetched in
// batches, and a dropped connection resumed with ?after=<last event id>.
(function () {
  "use strict";

  const root = document.getElementById("live-sweep");
  if (!root) return;
  const sweepId = Number(root.dataset.sweepId);
  const keys = root.dataset.keys ? root.dataset.keys.split(",") : [];
  const FINAL = new Set(["completed", "stopped", "budget_exhausted", "failed"]);
  const LABELS = { budget_exhausted: "Budget exhausted" };
  const ALLOWED = { pending: ["pause", "stop"], running: ["pause", "stop"], paused: ["resume", "stop"] };
  const FETCH_DELAY_MS = 400;
  const MAX_BACKOFF_MS = 15000;
  const MAX_ROWS = 200;
  // Event data fields → the counters they set (absolute values: replays are harmless).
  const PROGRESS = {
    total_runs: "total",
    completed_runs: "completed",
    failed_runs: "failed",
    cancelled_runs: "cancelled",
    tokens_used: "tokens",
    token_budget: "budget",
    calls_done: "calls",
    total_calls: "totalCalls",
  };

  const state = {
    status: root.dataset.status,
    total: Number(root.dataset.total),
    completed: Number(root.dataset.completed),
    failed: Number(root.dataset.failed),
    cancelled: Number(root.dataset.cancelled),
    tokens: Number(root.dataset.tokens),
    budget: Number(root.dataset.budget),
    calls: Number(root.dataset.calls),
    totalCalls: Number(root.dataset.totalCalls),
  };
  let lastId = Number(root.dataset.after) || 0;
  let socket = null;
  let attempt = 0;
  let connections = 0;
  let retryTimer = null;
  const pendingRuns = new Set();
  let fetchTimer = null;
  let fetchFailures = 0;
  let best = null;

  const $ = (id) => document.getElementById(id);
  const fmt = (n) => Number(n).toLocaleString("en-US");
  const pct = (part, whole) => (whole ? Math.min(100, Math.round((part / whole) * 100)) : 0) + "%";

  // -- rendering -----------------------------------------------------------------
  function render() {
    const done = state.completed + state.failed + state.cancelled;
    const progress = $("sweep-progress");
    progress.max = Math.max(1, state.total);
    progress.value = done;
    $("progress-pct").textContent = pct(done, state.total);
    $("runs-done").textContent = fmt(done);
    $("runs-total").textContent = fmt(state.total);
    const calls = $("call-progress");
    calls.max = Math.max(1, state.totalCalls);
    calls.value = Math.min(state.calls, state.totalCalls);
    $("call-pct").textContent = pct(state.calls, state.totalCalls);
    $("calls-done").textContent = fmt(state.calls);
    $("total-calls").textContent = fmt(state.totalCalls);
    $("count-completed").textContent = fmt(state.completed);
    $("count-failed").textContent = fmt(state.failed);
    $("count-cancelled").textContent = fmt(state.cancelled);
    $("count-remaining").textContent = fmt(Math.max(0, state.total - done));
    $("tokens-used").textContent = fmt(state.tokens);
    $("token-budget").textContent = fmt(state.budget);
    const tokens = $("token-progress");
    tokens.max = Math.max(1, state.budget);
    tokens.value = Math.min(state.tokens, state.budget);
    $("token-pct").textContent = pct(state.tokens, state.budget);
    const badge = $("sweep-status");
    badge.className = "badge " + state.status;
    badge.textContent = LABELS[state.status] || state.status.charAt(0).toUpperCase() + state.status.slice(1);
    const allowed = ALLOWED[state.status] || [];
    document.querySelectorAll("#sweep-controls button[data-action]").forEach((button) => {
      button.disabled = !allowed.includes(button.dataset.action);
    });
    $("finished-links").classList.toggle("hidden", !FINAL.has(state.status));
    $("sweep-controls").classList.toggle("hidden", FINAL.has(state.status));
  }

  function setConnection(kind, text) {
    const el = $("conn-state");
    el.dataset.state = kind;
    el.textContent = text;
  }

  function cell(tag, text, className) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function runRow(run) {
    const tr = document.createElement("tr");
    tr.dataset.run = run.id;
    const head = cell("th");
    head.scope = "row";
    const link = cell("a", "#" + run.id);
    link.href = run.url;
    head.appendChild(link);
    const status = cell("td");
    status.appendChild(cell("span", run.status, "badge " + run.status));
    if (run.eliminated_after) {
      status.append(" ", cell("span", "dropped at " + run.eliminated_after + " rows", "badge dropped"));
    }
    // The cells' text comes formatted by the server, as in the rows it renders.
    const score = cell("td", run.shown.score, "num");
    score.dataset.score = run.weighted_score == null ? "" : run.weighted_score;
    tr.append(head, status, score);
    run.shown.config.forEach((value) => {
      const td = cell("td");
      td.appendChild(cell("code", value));
      tr.appendChild(td);
    });
    tr.append(
      cell("td", run.shown.tokens, "num"),
      cell("td", run.shown.cost, "num"),
      cell("td", run.shown.latency, "num"),
    );
    if (run.error) tr.title = run.error;
    return tr;
  }

  function addRuns(runs) {
    const body = document.querySelector("#results tbody");
    runs.forEach((run) => {
      const row = runRow(run);
      const existing = body.querySelector('tr[data-run="' + run.id + '"]');
      if (existing) existing.replaceWith(row);
      else {
        row.classList.add("new-row");
        body.insertBefore(row, body.firstChild);
      }
    });
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    markBest(body);
    $("no-results").classList.toggle("hidden", body.rows.length > 0);
  }

  function markBest(body) {
    best = null;
    Array.from(body.rows).forEach((row) => {
      row.classList.remove("best");
      const value = row.querySelector("[data-score]")?.dataset.score;
      if (value !== "" && value !== undefined && (!best || Number(value) > best.score)) {
        best = { row, score: Number(value) };
      }
    });
    if (best) best.row.classList.add("best");
  }

  // -- finished runs, fetched in batches ----------------------------------------------
  function queueRun(runId) {
    pendingRuns.add(runId);
    if (!fetchTimer) fetchTimer = setTimeout(fetchRuns, FETCH_DELAY_MS);
  }

  function fetchRuns() {
    fetchTimer = null;
    const ids = Array.from(pendingRuns).slice(0, 200);
    ids.forEach((id) => pendingRuns.delete(id));
    if (!ids.length) return;
    const url = root.dataset.runsUrl + "?ids=" + ids.join(",") + "&keys=" + encodeURIComponent(keys.join(","));
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((response) => {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then((data) => {
        fetchFailures = 0;
        addRuns(data.runs);
      })
      .catch(() => {
        fetchFailures += 1;
        ids.forEach((id) => pendingRuns.add(id));
      })
      .finally(() => {
        if (fetchFailures >= 5) {
          setConnection("closed", "Could not load the finished runs; reload the page.");
        } else if (pendingRuns.size && !fetchTimer) {
          fetchTimer = setTimeout(fetchRuns, FETCH_DELAY_MS * 2 ** fetchFailures);
        }
      });
  }

  // -- racing: a round closed ---------------------------------------------------------
  function showRound(data) {
    const table = $("race-rounds");
    if (!table) return;
    const closed = table.querySelector('tr[data-round="' + data.round + '"]') || addRoundRow(table, data);
    closed.cells[3].textContent = fmt(data.eliminated.length);
    const leader = closed.cells[4];
    leader.textContent = "";
    if (data.leader != null) {
      const link = cell("a", "#" + data.leader);
      link.href = root.dataset.runUrl.replace("/0/", "/" + data.leader + "/");
      leader.appendChild(link);
    }
    if (data.next_rows != null) {
      addRoundRow(table, { round: data.round + 1, rows: data.next_rows, candidates: data.survivors });
      $("race-round").textContent = data.round + 1;
      $("race-rows").textContent = fmt(data.next_rows);
    }
    $("race-candidates").textContent = fmt(data.survivors);
    $("race-calls").textContent = fmt(data.calls);
    $("race-saved").textContent = fmt(data.calls_saved);
    // The dropped runs' rows are fetched again, to show where they stopped.
    data.eliminated.forEach(queueRun);
  }

  function addRoundRow(table, round) {
    if (table.querySelector('tr[data-round="' + round.round + '"]')) return null;
    const tr = document.createElement("tr");
    tr.dataset.round = round.round;
    const head = cell("th", String(round.round));
    head.scope = "row";
    tr.append(head, cell("td", fmt(round.rows), "num"), cell("td", fmt(round.candidates), "num"));
    tr.append(cell("td", "…", "num"), cell("td", "—"));
    table.tBodies[0].appendChild(tr);
    return tr;
  }

  // -- events ------------------------------------------------------------------------
  function handle(event) {
    if (event.sweep_id !== sweepId) return;
    const data = event.data || {};
    switch (event.type) {
      case "sweep.progress":
        applyCounts(data);
        if (data.status) state.status = data.status;
        break;
      case "run.completed":
      case "run.failed":
        if (event.run_id != null) queueRun(event.run_id);
        break;
      case "sweep.round":
        showRound(data);
        break;
      case "sweep.started":
      case "sweep.resumed":
        state.status = "running";
        break;
      case "sweep.paused":
        state.status = "paused";
        break;
      default:
        if (event.type.startsWith("sweep.")) {
          const status = event.type.slice("sweep.".length);
          if (FINAL.has(status)) finish(status, data);
        }
    }
    render();
  }

  function applyCounts(data) {
    Object.keys(PROGRESS).forEach((name) => {
      if (typeof data[name] === "number") state[PROGRESS[name]] = data[name];
    });
  }

  function finish(status, data) {
    state.status = status;
    applyCounts(data);
    setConnection("closed", "Finished");
    if (socket) socket.close(1000, "sweep finished");
  }

  // -- the socket ----------------------------------------------------------------------
  function connect() {
    retryTimer = null;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const url = scheme + location.host + root.dataset.wsPath + "?after=" + lastId;
    const ws = new WebSocket(url);
    socket = ws;
    ws.addEventListener("open", () => {
      attempt = 0;
      connections += 1;
      setConnection("open", "Live");
    });
    ws.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      if (typeof event.id !== "number" || event.id <= lastId) return;
      lastId = event.id;
      handle(event);
    });
    ws.addEventListener("close", (closed) => {
      if (socket !== ws) return;
      socket = null;
      if (closed.code === 4401) {
        setConnection("closed", "Logged out: reload the page to log in again.");
        return;
      }
      if (FINAL.has(state.status)) return;
      const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempt) * (0.75 + Math.random() * 0.5);
      attempt += 1;
      setConnection("closed", "Connection lost; reconnecting in " + Math.ceil(delay / 1000) + " s…");
      retryTimer = setTimeout(connect, delay);
    });
  }

  // For tests and the curious: drop the connection as a network failure would.
  window.promptLooperLive = {
    drop() {
      if (socket) socket.close(4000, "dropped on purpose");
    },
    get lastEventId() {
      return lastId;
    },
    get connections() {
      return connections;
    },
    get connected() {
      return socket !== null && socket.readyState === WebSocket.OPEN;
    },
  };

  render();
  markBest(document.querySelector("#results tbody"));
  if (!FINAL.has(state.status)) connect();
})();
