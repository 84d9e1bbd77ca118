// fitq dashboard: the jobs list and a page per job, live, from the v1 API alone.
// No libraries and no build step: this file is served as it is.

const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "fitq.token";
const POLL_MS = 1000;
const PAGE_SIZE = 50;
const LOG_KEEP = 200_000;
const STATUS_WORDS = {
  queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed",
  cancelled: "Cancelled",
};
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmt(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(2);
  return value.toPrecision(4).replace(/\.?0+$/, "");
}

function size(bytes) {
  if (bytes >= 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

function duration(job) {
  if (!job.started_at) return "–";
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  let s = Math.max(0, Math.round((end - Date.parse(job.started_at)) / 1000));
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
}

function statusWords(job) {
  let words = STATUS_WORDS[job.status] || job.status;
  if (job.stop_reason && job.stop_reason !== "completed" && job.stop_reason !== job.status) {
    words += ` (${job.stop_reason.replace(/_/g, " ")})`;
  }
  if (job.status === "running" && job.cancel_requested) words += " – cancelling";
  return words;
}

function progressText(job) {
  const p = job.progress;
  if (job.kind && job.kind !== "fit") {
    // A run (evaluate, predict) of the model of job parent_job_id: it has no epochs.
    return `${job.kind} with the model of ${job.parent_job_id}`;
  }
  if (p.epoch === null || p.epoch === undefined) {
    return job.status === "queued" ? "waiting" : `0 of ${p.epochs} epochs`;
  }
  let text = `epoch ${p.epoch} of ${p.epochs}`;
  if (job.status === "running" && p.step !== null && p.step !== undefined) {
    text += p.steps ? ` · step ${p.step} of ${p.steps}` : ` · step ${p.step}`;
  }
  return text;
}

function progressValue(job) {
  const p = job.progress;
  if (!p.epochs) return job.status === "succeeded" ? 1 : 0;
  if (!p.epoch) return 0;
  const within = job.status === "running" && p.steps ? (p.step || 0) / p.steps : 1;
  return Math.min(1, (p.epoch - 1 + within) / p.epochs);
}

function latestMonitored(job) {
  const metrics = job.latest_metrics || {};
  const monitor = job.insight ? job.insight.monitor : "loss";
  if (metrics[monitor] !== undefined) return [monitor, metrics[monitor]];
  if (metrics.loss !== undefined) return ["loss", metrics.loss];
  return [monitor, null];
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function markReady(kind) {
  if (document.body.dataset.ready === kind) return;
  document.body.dataset.ready = kind;
  window.fitqReadyAt = performance.now();
}

function setLive(text) {
  document.getElementById("live").textContent = text;
}

// ---------------------------------------------------------------- the API

// Where a job's model came from: a warm start links to its parent job's page.
function modelSource(job) {
  const model = job.spec.model || {};
  if (job.parent_job_id) {
    return el("span", {}, "warm start from ",
      el("a", { href: `#/jobs/${job.parent_job_id}`, id: "job-parent" }, job.parent_job_id),
      `, checkpoint ${model.checkpoint}`);
  }
  if (job.model_id) return `uploaded ${job.model_id}${model.weights === false ? " (architecture only)" : ""}`;
  if (model.builtin) return `builtin ${model.builtin}`;
  return "keras_config";
}

class AuthRequired extends Error {}

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

function headers(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

function askToken() {
  const form = document.getElementById("token-form");
  form.hidden = false;
  document.getElementById("token-input").focus();
}

async function api(path, { method = "GET", etag = null, signal } = {}) {
  const res = await fetch(path, {
    method,
    headers: headers(etag ? { "If-None-Match": etag } : {}),
    signal,
  });
  if (res.status === 401) {
    askToken();
    throw new AuthRequired("a token is required");
  }
  if (res.status === 304) return { status: 304, etag, body: null, headers: res.headers };
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail; } catch { /* not JSON */ }
    throw new Error(`${res.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  const type = res.headers.get("content-type") || "";
  const body = type.includes("json") ? await res.json() : await res.text();
  return { status: res.status, etag: res.headers.get("etag"), body, headers: res.headers };
}

function showAuth() {
  const span = document.getElementById("auth");
  span.replaceChildren();
  if (token()) {
    span.append("using a token ", el("button", {
      type: "button",
      onclick: () => { localStorage.removeItem(TOKEN_KEY); route(); },
    }, "Forget token"));
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("token-input");
  localStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  event.target.hidden = true;
  route();
});

// ---------------------------------------------------------------- jobs list

class ListView {
  constructor(query) {
    this.status = query.get("status") || "";
    this.queue = query.get("queue") || "";
    this.cursors = [null];
    this.page = 0;
    this.etag = null;
    this.rows = new Map();
    this.stopped = false;
    this.jobs = [];
  }

  start() {
    const main = document.getElementById("main");
    const statusSelect = el("select", { name: "status" },
      el("option", { value: "" }, "any"),
      ...Object.entries(STATUS_WORDS).map(([value, words]) =>
        el("option", { value, selected: value === this.status }, words)));
    const queueInput = el("input", { name: "queue", value: this.queue, size: 12, placeholder: "any" });
    const form = el("form", {
      class: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        const q = new URLSearchParams();
        if (statusSelect.value) q.set("status", statusSelect.value);
        if (queueInput.value.trim()) q.set("queue", queueInput.value.trim());
        location.hash = `#/?${q}`;
      },
    },
    el("label", {}, "Status", statusSelect),
    el("label", {}, "Queue", queueInput),
    el("button", { type: "submit" }, "Filter"));
    statusSelect.addEventListener("change", () => form.requestSubmit());
    this.tbody = el("tbody");
    this.pageLabel = el("span", { class: "note" });
    this.prev = el("button", { type: "button", onclick: () => this.go(-1) }, "← Newer");
    this.next = el("button", { type: "button", onclick: () => this.go(1) }, "Older →");
    this.emptyNote = el("p", { class: "empty", hidden: true }, "No jobs match.");
    main.replaceChildren(
      el("h1", {}, "Jobs"),
      form,
      el("div", { class: "scroll" }, el("table", { id: "jobs" },
        el("thead", {}, el("tr", {},
          ...["Name", "Status", "Queue", "Progress", "Latest metric", "Duration", "Attempts"]
            .map((name) => el("th", { scope: "col" }, name)))),
        this.tbody)),
      this.emptyNote,
      el("div", { class: "pager" }, this.prev, this.pageLabel, this.next));
    this.loop();
  }

  stop() { this.stopped = true; }

  go(delta) {
    this.page = Math.max(0, this.page + delta);
    this.etag = null;
    this.refresh();
  }

  url() {
    const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (this.status) q.set("status", this.status);
    if (this.queue) q.set("queue", this.queue);
    if (this.cursors[this.page]) q.set("cursor", this.cursors[this.page]);
    return `/v1/jobs?${q}`;
  }

  async refresh() {
    const res = await api(this.url(), { etag: this.etag });
    if (this.stopped) return;
    if (res.status !== 304) {
      this.etag = res.etag;
      this.jobs = res.body.items;
      this.cursors[this.page + 1] = res.body.next_cursor;
      this.cursors.length = this.page + 2;
      this.render();
    } else {
      for (const job of this.jobs) this.updateRow(job, true);
    }
    markReady("list");
  }

  async loop() {
    while (!this.stopped) {
      try {
        await this.refresh();
        setLive(`live · updated ${new Date().toLocaleTimeString()}`);
      } catch (err) {
        if (err instanceof AuthRequired) return;
        setLive(`cannot reach the API (${err.message}); retrying`);
      }
      await sleep(POLL_MS);
    }
  }

  render() {
    const seen = new Set();
    this.jobs.forEach((job, index) => {
      seen.add(job.id);
      const row = this.updateRow(job, false);
      if (this.tbody.children[index] !== row) this.tbody.insertBefore(row, this.tbody.children[index] || null);
    });
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) { row.remove(); this.rows.delete(id); }
    }
    this.emptyNote.hidden = this.jobs.length > 0;
    this.prev.disabled = this.page === 0;
    this.next.disabled = !this.cursors[this.page + 1];
    this.pageLabel.textContent = `page ${this.page + 1}`;
  }

  updateRow(job, clockOnly) {
    let row = this.rows.get(job.id);
    if (!row) {
      row = el("tr", { dataset: { job: job.id } },
        el("td", {}, el("a", { href: `#/jobs/${job.id}` })),
        el("td", {}, el("span", { class: "status" })),
        el("td"),
        el("td", { class: "progress" }, el("progress", { max: 1 }), " ", el("span")),
        el("td", { class: "num" }),
        el("td", { class: "num" }),
        el("td", { class: "num" }));
      this.rows.set(job.id, row);
    }
    const cells = row.children;
    cells[5].textContent = duration(job);
    if (clockOnly) return row;
    cells[0].firstChild.textContent = job.name || job.id.slice(0, 12);
    const status = cells[1].firstChild;
    status.className = `status ${job.status}`;
    status.textContent = statusWords(job);
    cells[2].textContent = job.queue;
    cells[3].querySelector("progress").value = progressValue(job);
    cells[3].querySelector("span").textContent = progressText(job);
    const [name, value] = latestMonitored(job);
    cells[4].textContent = value === null ? "–" : `${name} ${fmt(value)}`;
    cells[6].textContent = job.attempts;
    return row;
  }
}

// ---------------------------------------------------------------- charts

function niceTicks(lo, hi, count) {
  const span = hi - lo || Math.abs(hi) || 1;
  const step0 = span / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || 10 * mag;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

const W = 560, H = 240, M = { left: 52, right: 14, top: 14, bottom: 30 };

function drawChart(figure, title, series, markers) {
  const points = series.flatMap((s) => s.points);
  const epochs = points.map((p) => p[0]);
  const values = points.map((p) => p[1]).filter(Number.isFinite);
  const x0 = epochs.length ? Math.min(...epochs) : 1;
  const x1 = Math.max(x0 + 1, ...epochs);
  let y0 = values.length ? Math.min(...values) : 0;
  let y1 = values.length ? Math.max(...values) : 1;
  const pad = (y1 - y0) * 0.06 || Math.abs(y1) * 0.1 || 1;
  y0 -= pad; y1 += pad;
  const sx = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
  const sy = (y) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `${title} against epoch`,
    "data-points": points.length,
    "data-last-epoch": epochs.length ? Math.max(...epochs) : 0,
  });
  root.append(svg("title", {}, `${title} against epoch`));
  for (const t of niceTicks(y0, y1, 5)) {
    root.append(svg("line", { class: "grid", x1: M.left, x2: W - M.right, y1: sy(t), y2: sy(t) }));
    root.append(svg("text", { x: M.left - 6, y: sy(t) + 3, "text-anchor": "end" }, fmt(t)));
  }
  for (const t of niceTicks(x0, x1, 8).filter((t) => Number.isInteger(t))) {
    root.append(svg("text", { x: sx(t), y: H - M.bottom + 14, "text-anchor": "middle" }, t));
  }
  root.append(svg("text", { x: (M.left + W - M.right) / 2, y: H - 3, "text-anchor": "middle" }, "epoch"));
  root.append(svg("line", { class: "axis", x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom }));
  root.append(svg("line", { class: "axis", x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }));
  for (const marker of markers) {
    if (!marker.epoch || marker.epoch < x0 || marker.epoch > x1) continue;
    const x = sx(marker.epoch);
    const line = svg("line", {
      class: `marker ${marker.kind}`, x1: x, x2: x, y1: M.top, y2: H - M.bottom,
      "data-marker": marker.kind, "data-epoch": marker.epoch,
    });
    line.append(svg("title", {}, `${marker.label}: epoch ${marker.epoch}`));
    root.append(line);
    const flip = x > W - M.right - 90;  // near the right edge: label on the line's left
    root.append(svg("text", {
      class: `marker-label ${marker.kind}`, x: flip ? x - 3 : x + 3, y: M.top + 9 + 11 * marker.row,
      "text-anchor": flip ? "end" : "start",
    }, `${marker.label} ${marker.epoch}`));
  }
  for (const s of series) {
    const finite = s.points.filter((p) => Number.isFinite(p[1]));
    if (!finite.length) continue;
    const d = finite.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    root.append(svg("path", { class: s.kind, d, "data-series": s.name, "data-count": finite.length }));
    if (finite.length <= 200) {
      for (const [x, y] of finite) {
        const dot = svg("circle", { class: s.kind, cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 2.4 });
        dot.append(svg("title", {}, `epoch ${x}: ${s.name} ${fmt(y)}`));
        root.append(dot);
      }
    }
  }
  const keys = series.filter((s) => s.points.length).map((s) =>
    el("span", { class: "key" }, el("i", { class: s.kind }), s.label || s.name));
  figure.replaceChildren(el("figcaption", {}, title, ...keys), root);
}

// ---------------------------------------------------------------- one job

class JobView {
  constructor(id) {
    this.id = id;
    this.job = null;
    this.epochs = [];
    this.checkpoints = new Map();
    this.logOffset = 0;
    this.logText = "";
    this.stopped = false;
    this.finished = false;
    this.abort = new AbortController();
    this.figures = new Map();
    this.pending = null;
  }

  stop() {
    this.stopped = true;
    this.abort.abort();
  }

  async start() {
    const main = document.getElementById("main");
    this.title = el("h1", {}, "Job ", this.id);
    this.meta = el("div", { class: "meta" });
    this.actions = el("div", { class: "actions" });
    this.insightBox = el("section", { id: "insight" });
    this.charts = el("div", { class: "charts", id: "charts" });
    this.errorBox = el("section", { id: "error" });
    this.warningsBox = el("section", { id: "warnings" });
    this.ckBody = el("tbody");
    this.ckTable = el("table", { id: "checkpoints" },
      el("thead", {}, el("tr", {}, ...["Epoch", "File", "Monitored value", "Best", "Size"]
        .map((name) => el("th", { scope: "col" }, name)))), this.ckBody);
    this.ckEmpty = el("p", { class: "empty" }, "No checkpoints yet.");
    this.log = el("pre", { class: "log", id: "log", tabindex: 0 });
    this.spec = el("pre", { class: "spec", id: "spec" });
    main.replaceChildren(
      el("p", {}, el("a", { href: "#/" }, "← All jobs")),
      this.title, this.meta, this.actions, this.errorBox, this.warningsBox,
      el("h2", {}, "Insight"), this.insightBox,
      el("h2", {}, "Metrics"), this.charts,
      el("h2", {}, "Checkpoints"), el("div", { class: "scroll" }, this.ckTable), this.ckEmpty,
      el("h2", {}, "Log"), this.log,
      el("details", {}, el("summary", {}, "Spec"), this.spec));
    const base = `/v1/jobs/${this.id}`;
    let job, metrics, checkpoints, log;
    try {
      [job, metrics, checkpoints, log] = await Promise.all([
        api(base), api(`${base}/metrics?limit=10000`), api(`${base}/checkpoints`),
        api(`${base}/logs?tail_bytes=65536`),
      ]);
    } catch (err) {
      if (!(err instanceof AuthRequired)) main.replaceChildren(el("p", { class: "error" }, err.message));
      return;
    }
    if (this.stopped) return;
    this.job = job.body;
    this.jobEtag = job.etag;
    this.addEpochs(metrics.body.items);
    for (const ck of checkpoints.body.items) this.checkpoints.set(ck.id, ck);
    this.logOffset = Number(log.headers.get("x-log-size") || 0);
    this.appendLog(log.body);
    this.spec.textContent = JSON.stringify(this.job.spec, null, 2);
    this.renderAll();
    markReady("job");
    this.follow();
  }

  addEpochs(items) {
    const last = this.epochs.length ? this.epochs[this.epochs.length - 1].epoch : 0;
    for (const item of items) if (item.epoch > last) this.epochs.push(item);
    if (items.length && items[0].epoch <= last) {
      const byEpoch = new Map(this.epochs.map((e) => [e.epoch, e]));
      for (const item of items) byEpoch.set(item.epoch, item);
      this.epochs = [...byEpoch.values()].sort((a, b) => a.epoch - b.epoch);
    }
  }

  appendLog(text) {
    if (!text) return;
    const atBottom = this.log.scrollTop + this.log.clientHeight >= this.log.scrollHeight - 4;
    this.logText = (this.logText + text).slice(-LOG_KEEP);
    this.log.textContent = this.logText;
    if (atBottom) this.log.scrollTop = this.log.scrollHeight;
  }

  schedule(...parts) {
    this.pendingParts = new Set([...(this.pendingParts || []), ...parts]);
    if (this.pending) return;
    this.pending = setTimeout(() => {
      this.pending = null;
      const todo = this.pendingParts;
      this.pendingParts = new Set();
      if (this.stopped) return;
      if (todo.has("job")) this.renderJob();
      if (todo.has("charts") || todo.has("job")) this.renderCharts();
      if (todo.has("checkpoints")) this.renderCheckpoints();
    }, 30);
  }

  renderAll() {
    this.renderJob();
    this.renderCharts();
    this.renderCheckpoints();
  }

  renderJob() {
    const job = this.job;
    this.title.replaceChildren(job.name || "Job", " ",
      el("span", { class: `status ${job.status}`, id: "job-status" }, statusWords(job)));
    document.title = `${job.name || job.id} · fitq`;
    const item = (label, value, id) => el("div", { id }, el("span", {}, label), value);
    const best = job.insight && job.insight.best_epoch
      ? `epoch ${job.insight.best_epoch} (${job.insight.monitor} ${fmt(job.insight.best_value)})` : "–";
    this.meta.replaceChildren(
      item("Id", el("code", {}, job.id), "job-id"),
      item("Queue", job.queue),
      item("Progress", progressText(job), "job-progress"),
      item("Best", best),
      item("Duration", duration(job)),
      item("Attempts", String(job.attempts)),
      item("Model", modelSource(job), "job-source"),
      item("Created", new Date(job.created_at).toLocaleString()),
      item("Test metrics", job.test_metrics
        ? Object.entries(job.test_metrics).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") : "–"),
      item("Trained model", this.modelLinks(), "job-model"));
    this.actions.replaceChildren();
    if (!FINISHED.has(job.status)) {
      const cancel = el("button", {
        type: "button", class: "danger", id: "cancel", disabled: job.cancel_requested,
        onclick: () => this.cancel(cancel),
      }, job.cancel_requested ? "Cancelling…" : "Cancel job");
      this.actions.append(cancel);
    }
    this.errorBox.replaceChildren();
    if (job.error) {
      this.errorBox.append(el("div", { class: "error" },
        el("h2", {}, "Error"),
        el("p", {}, el("strong", {}, job.error.type), ": ", job.error.message),
        job.error.traceback_tail ? el("pre", { class: "trace" }, job.error.traceback_tail) : null));
    }
    this.warningsBox.replaceChildren();
    if (job.warnings.length) {
      this.warningsBox.append(el("h2", {}, "Warnings"),
        el("ul", { class: "warnings" }, ...job.warnings.map((w) => el("li", {}, w))));
    }
    this.renderInsight();
  }

  renderInsight() {
    const insight = this.job.insight;
    const list = el("ul", { class: "findings" });
    if (insight) {
      for (const f of insight.findings) {
        list.append(el("li", { class: f.kind, dataset: { kind: f.kind, epoch: f.epoch } },
          el("strong", {}, `${f.kind[0].toUpperCase()}${f.kind.slice(1)} from epoch ${f.epoch}: `),
          f.message, el("br"), el("span", { class: "remedy" }, `What helps: ${f.remedy}`)));
      }
      if (!insight.findings.length && this.epochs.length) {
        list.append(el("li", { class: "ok" }, "No overfitting, underfitting or divergence found so far."));
      }
      if (insight.early_stopping_epoch) {
        list.append(el("li", {}, `EarlyStopping stopped training after epoch ${insight.early_stopping_epoch}.`));
      }
      if (insight.final_weights_epoch) {
        list.append(el("li", {},
          `The final model holds epoch ${insight.final_weights_epoch}'s weights (restore_best_weights).`));
      }
    }
    if (!list.children.length) list.append(el("li", {}, "Insight appears once epochs are recorded."));
    this.insightBox.replaceChildren(list);
  }

  renderCharts() {
    const insight = this.job.insight || {};
    const names = [];
    for (const e of this.epochs) {
      for (const key of Object.keys(e.metrics)) {
        const base = key.startsWith("val_") ? key.slice(4) : key;
        if (!names.includes(base)) names.push(base);
      }
    }
    names.sort((a, b) => (a === "loss" ? -1 : b === "loss" ? 1 : a.localeCompare(b)));
    const markers = [
      { kind: "best", label: "best", epoch: insight.best_epoch, row: 0 },
      { kind: "stop", label: "early stop", epoch: insight.early_stopping_epoch, row: 1 },
      { kind: "over", label: "overfitting", epoch: insight.overfitting_epoch, row: 2 },
    ];
    const charts = names.map((base) => ({
      title: base,
      series: [
        { name: base, label: "training", kind: "train", points: this.series(base) },
        { name: `val_${base}`, label: "validation", kind: "val", points: this.series(`val_${base}`) },
      ],
    }));
    const rates = new Set(this.epochs.map((e) => e.lr).filter((lr) => lr !== null && lr !== undefined));
    if (rates.size > 1) {  // a learning rate that changed (ReduceLROnPlateau, a schedule)
      charts.push({
        title: "learning rate",
        series: [{ name: "lr", kind: "train", points: this.epochs.filter((e) => e.lr !== null).map((e) => [e.epoch, e.lr]) }],
      });
    }
    if (!charts.length) {
      this.charts.replaceChildren(el("p", { class: "empty" }, "No epoch has ended yet."));
      this.figures.clear();
      return;
    }
    if (!this.figures.size) this.charts.replaceChildren();
    for (const chart of charts) {
      let figure = this.figures.get(chart.title);
      if (!figure) {
        figure = el("figure", { class: "chart", dataset: { metric: chart.title } });
        this.figures.set(chart.title, figure);
        this.charts.append(figure);
      }
      drawChart(figure, chart.title, chart.series, markers);
    }
  }

  series(key) {
    const out = [];
    for (const e of this.epochs) {
      const value = e.metrics[key];
      if (value !== undefined && value !== null) out.push([e.epoch, value]);
    }
    return out;
  }

  renderCheckpoints() {
    const rows = [...this.checkpoints.values()].sort((a, b) => a.epoch - b.epoch || a.id - b.id);
    const bestId = rows.filter((ck) => ck.is_best).map((ck) => ck.id).pop();
    this.ckEmpty.hidden = rows.length > 0;
    this.ckTable.hidden = rows.length === 0;
    this.ckBody.replaceChildren(...rows.map((ck) => {
      const href = `/v1/jobs/${this.id}/checkpoints/${ck.id}/file`;
      const name = ck.path.split("/").pop();
      const link = ck.removed_at
        ? el("span", { class: "removed", title: `removed ${ck.removed_at}` }, `${ck.path} (removed: ${ck.removed_reason})`)
        : el("a", { href, download: name, onclick: (event) => this.download(event, href, name) }, ck.path);
      return el("tr", { dataset: { checkpoint: ck.id } },
        el("td", { class: "num" }, ck.epoch),
        el("td", {}, link),
        el("td", { class: "num" }, ck.monitor ? `${ck.monitor} ${fmt(ck.value)}` : "–"),
        el("td", {}, ck.id === bestId ? el("span", { class: "best-mark" }, "★ best") : ""),
        el("td", { class: "num" }, size(ck.size_bytes)));
    }));
  }

  modelLinks() {
    const model = this.job.final_model;
    if (!model) return FINISHED.has(this.job.status) ? "–" : "saved when the job succeeds";
    const base = `/v1/jobs/${this.id}/model`;
    const link = (href, name, text) =>
      el("a", { href, download: name, onclick: (event) => this.download(event, href, name) }, text);
    const links = el("span", { class: "model" },
      link(base, `model-${this.id}.keras`, "model.keras"), ` (${size(model.size_bytes)})`);
    if (model.savedmodel) {
      links.append(" · ", link(`${base}?format=savedmodel`, `savedmodel-${this.id}.tar.gz`, "SavedModel (.tar.gz)"));
    }
    return links;
  }

  async download(event, href, name) {
    if (!token()) return;  // a plain link works when the API needs no token
    event.preventDefault();
    const res = await fetch(href, { headers: headers() });
    if (!res.ok) { setLive(`download failed: ${res.status}`); return; }
    const url = URL.createObjectURL(await res.blob());
    const a = el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  async cancel(button) {
    const label = this.job.name || this.job.id;
    if (!window.confirm(`Cancel job "${label}"? A running job stops after the current batch and keeps its checkpoints.`)) return;
    button.disabled = true;
    try {
      const res = await api(`/v1/jobs/${this.id}/cancel`, { method: "POST" });
      this.job = res.body;
      this.schedule("job");
    } catch (err) {
      setLive(`cancel failed: ${err.message}`);
      button.disabled = false;
    }
  }

  // Live updates: server-sent events read through fetch (so a token can be sent),
  // reconnecting where they left off; polling if the stream keeps failing.
  async follow() {
    let failures = 0;
    while (!this.stopped && !this.finished) {
      try {
        await this.stream();
        failures = 0;
      } catch (err) {
        if (this.stopped || err instanceof AuthRequired) return;
        failures += 1;
        if (failures >= 3) return this.poll();
        setLive("reconnecting…");
      }
      if (!this.finished) await sleep(1000);
    }
    if (this.finished) setLive("finished");
  }

  async stream() {
    const lastEpoch = this.epochs.length ? this.epochs[this.epochs.length - 1].epoch : 0;
    const lastCk = Math.max(0, ...this.checkpoints.keys());
    const q = new URLSearchParams({
      after_epoch: String(lastEpoch), after_checkpoint: String(lastCk), log_offset: String(this.logOffset),
    });
    const res = await fetch(`/v1/jobs/${this.id}/events?${q}`, {
      headers: headers({ Accept: "text/event-stream" }), signal: this.abort.signal,
    });
    if (res.status === 401) { askToken(); throw new AuthRequired("a token is required"); }
    if (!res.ok || !res.body) throw new Error(`events: ${res.status}`);
    setLive("live");
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        this.onFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  onFrame(frame) {
    let event = "message";
    const data = [];
    for (const line of frame.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
    }
    if (!data.length) return;
    const payload = JSON.parse(data.join("\n"));
    if (event === "job") { this.job = payload; this.schedule("job"); }
    else if (event === "epoch") { this.addEpochs([payload]); this.schedule("charts"); }
    else if (event === "checkpoint") { this.checkpoints.set(payload.id, payload); this.schedule("checkpoints"); }
    else if (event === "log") { this.appendLog(payload.text); this.logOffset = payload.log_offset; }
    else if (event === "end") { this.finished = true; }
  }

  async poll() {
    const base = `/v1/jobs/${this.id}`;
    while (!this.stopped) {
      setLive("live (polling)");
      try {
        const job = await api(base, { etag: this.jobEtag });
        if (job.status !== 304) {
          this.job = job.body;
          this.jobEtag = job.etag;
          const lastEpoch = this.epochs.length ? this.epochs[this.epochs.length - 1].epoch : 0;
          const [metrics, checkpoints] = await Promise.all([
            api(`${base}/metrics?after_epoch=${lastEpoch}&limit=10000`), api(`${base}/checkpoints`),
          ]);
          this.addEpochs(metrics.body.items);
          for (const ck of checkpoints.body.items) this.checkpoints.set(ck.id, ck);
          this.schedule("job", "charts", "checkpoints");
          if (FINISHED.has(this.job.status)) return setLive("finished");
        }
      } catch (err) {
        if (err instanceof AuthRequired) return;
        setLive(`cannot reach the API (${err.message}); retrying`);
      }
      await sleep(POLL_MS);
    }
  }
}

// ---------------------------------------------------------------- routing

let view = null;

function route() {
  if (view) view.stop();
  delete document.body.dataset.ready;
  showAuth();
  const hash = location.hash || "#/";
  const match = hash.match(/^#\/jobs\/([0-9a-f]{1,32})$/);
  if (match) {
    view = new JobView(match[1]);
  } else {
    const query = new URLSearchParams(hash.includes("?") ? hash.slice(hash.indexOf("?") + 1) : "");
    view = new ListView(query);
  }
  view.start();
}

window.addEventListener("hashchange", route);
route();
