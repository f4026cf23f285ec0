// The page: studies, accuracy curves (plain vs recycled), lineage graph, teachers, detail.
import { ApiError, get, post, setToken, token, url } from "./api.js";
import { clear, compactJSON, h, num, percent, seconds, utc } from "./dom.js";
import { lineageGraph } from "./graph.js";
import { lineChart } from "./plot.js";
import { TeacherTable } from "./table.js";

const $ = (id) => document.getElementById(id);
const state = { info: null, studies: [], curves: new Map(), detail: null };
let table = null;

function showError(error) {
  const box = $("error");
  box.hidden = false;
  box.textContent = error instanceof ApiError ? error.message : `The page failed: ${error.message || error}`;
}

function hideError() {
  $("error").hidden = true;
}

function option(value, text, selected) {
  return h("option", { value, selected: selected || null, text });
}

// -- studies -----------------------------------------------------------------------------

function renderStudies() {
  const body = $("studies-table").querySelector("tbody");
  clear(body);
  $("studies-empty").hidden = state.studies.length > 0;
  for (const st of state.studies) {
    const o = st.optuna;
    const saved = st.time_saved_s === null ? "-"
      : `${seconds(st.time_saved_s)}${st.speedup ? ` (${st.speedup.toFixed(2)}x)` : ""}`;
    body.append(h("tr", { "data-study": st.study },
      h("td", {}, h("a", { class: "link", text: st.study, title: "show this study's teachers, lineage and curve",
        onclick: () => focusStudy(st.study) })),
      h("td", { class: "num", text: st.ready }),
      h("td", { class: "num", text: st.trials }),
      h("td", { class: "num", text: num(st.best_value ?? (o ? o.best_value : null)) }),
      h("td", { text: st.metric_name ?? "-" }),
      h("td", { class: "num", text: st.students }),
      h("td", { class: "num", text: st.steps_distilled }),
      h("td", { class: "num", text: percent(st.mean_overhead) }),
      h("td", { class: "num", text: o ? o.trials : "-" }),
      h("td", { class: "num", text: o ? seconds(o.trial_seconds) : "-" }),
      h("td", { class: "num", text: saved, title: st.paired_with ? `against ${st.paired_with}` : "" })));
  }
}

function focusStudy(name) {
  $("filter-study").value = name;
  loadTeachers();
  if ([...$("lineage-study").options].some((o) => o.value === name)) {
    $("lineage-study").value = name;
    loadLineage();
  }
  const st = state.studies.find((x) => x.study === name);
  if (st && hasCurve(st)) {
    const side = name.endsWith("plain") ? "plain-study" : "recycled-study";
    $(side).value = name;
    if (st.paired_with && hasCurve(state.studies.find((x) => x.study === st.paired_with) || {})) {
      $(side === "plain-study" ? "recycled-study" : "plain-study").value = st.paired_with;
    }
    loadCurves();
  }
}

function hasCurve(st) {
  return Boolean(st.optuna && st.optuna.trials > 0) || st.ready > 0;
}

function fillSelects() {
  const names = state.studies.map((x) => x.study);
  const filter = $("filter-study");
  const chosen = filter.value;
  clear(filter).append(option("", "all studies"), ...names.map((n) => option(n, n, n === chosen)));

  const withLineage = state.studies.filter((x) => x.lineage_rows > 0).map((x) => x.study);
  const lin = $("lineage-study");
  const linChosen = withLineage.includes(lin.value) ? lin.value
    : withLineage.find((n) => n.endsWith("recycled")) || withLineage[0];
  clear(lin);
  if (withLineage.length === 0) lin.append(option("", "(no lineage yet)"));
  lin.append(...withLineage.map((n) => option(n, n, n === linChosen)));

  const curveNames = state.studies.filter(hasCurve).map((x) => x.study);
  const pair = state.studies.find((x) => x.paired_with && x.study.endsWith("recycled") && curveNames.includes(x.paired_with));
  const plainDefault = pair ? pair.paired_with : "";
  const recycledDefault = pair ? pair.study : (curveNames.find((n) => n.endsWith("recycled")) || curveNames[0] || "");
  for (const [id, fallback] of [["plain-study", plainDefault], ["recycled-study", recycledDefault]]) {
    const sel = $(id);
    const keep = curveNames.includes(sel.value) ? sel.value : fallback;
    clear(sel).append(option("", "(none)"), ...curveNames.map((n) => option(n, n, n === keep)));
    sel.value = keep;
  }
}

// -- teachers and detail -------------------------------------------------------------------

// each filter change starts a request; only the newest one's answer is shown (an older one
// that answers later would put back rows the filters no longer ask for)
let teachersAsked = 0;

async function loadTeachers() {
  const params = {
    study: $("filter-study").value,
    status: $("filter-status").value,
    state: $("filter-state").value,
  };
  const tbl = $("teachers-table");
  const asked = ++teachersAsked;
  tbl.dataset.loading = "1";
  try {
    const rows = await get(url("/api/teachers", params));
    if (asked !== teachersAsked) return;
    table.setRows(rows);
    tbl.dataset.query = JSON.stringify(params);
  } catch (e) {
    if (asked === teachersAsked) showError(e);
  } finally {
    if (asked === teachersAsked) delete tbl.dataset.loading;
  }
}

function field(dl, name, value) {
  dl.append(h("dt", { text: name }), h("dd", { text: value === null || value === undefined || value === "" ? "-" : value }));
}

async function showTeacher(id) {
  let d;
  try {
    d = await get(`/api/teachers/${encodeURIComponent(id)}`);
  } catch (e) {
    showError(e);
    return;
  }
  state.detail = d;
  const t = d.teacher;
  $("detail").hidden = false;
  $("detail-title").textContent = `Teacher ${t.id}: trial ${t.trial_number} of ${t.study}`;
  const dl = clear($("detail-fields"));
  for (const [k, v] of Object.entries(t)) {
    if (k === "created_at") field(dl, k, `${utc(v)} UTC`);
    else if (k === "params" || k === "tags") field(dl, k, compactJSON(v));
    else if (k === "metric_value") field(dl, k, num(v, 6));
    else field(dl, k, v === null ? null : String(v));
  }
  const taught = clear($("detail-taught"));
  if (!d.taught.length) taught.append(h("li", { class: "muted", text: "no trial distilled from it (yet)" }));
  for (const r of d.taught) {
    taught.append(h("li", {}, h("a", { class: "link", text: `trial ${r.trial_number} of ${r.study}`,
      onclick: () => focusStudy(r.study) }), r.kind === "init" ? " · started from its weights"
      : ` · ${r.steps_distilled} steps, weight ${num(r.weight)}`));
  }
  const learned = clear($("detail-learned"));
  if (!d.learned_from.length) learned.append(h("li", { class: "muted", text: "no teacher: a plain trial" }));
  for (const r of d.learned_from) {
    learned.append(h("li", {}, h("a", { class: "link", text: `teacher ${r.teacher_id}`, href: `#teacher/${r.teacher_id}` }),
      r.kind === "init" ? " · started from its weights (init parent)"
      : ` · ${r.steps_distilled} steps` + (r.overhead === null ? "" : `, overhead ${percent(r.overhead)}`)));
  }
  const info = state.info;
  $("detail-actions").hidden = !info.writes_enabled;
  $("delete-btn").hidden = t.status === "DELETED";
  $("restore-btn").hidden = t.status !== "QUARANTINED";
  $("action-msg").textContent = "";
  table.select(t.id);
  if (location.hash !== `#teacher/${t.id}`) history.replaceState(null, "", `#teacher/${t.id}`);
}

async function act(kind) {
  const d = state.detail;
  if (!d) return;
  if (!token()) {
    $("action-msg").textContent = "enter the server's token first (top right)";
    return;
  }
  const what = kind === "delete" ? "Mark this teacher DELETED? (teachers gc removes its blob later)"
    : "Restore this teacher to READY? (its blob is verified first)";
  if (!window.confirm(what)) return;
  try {
    await post(`/api/teachers/${d.teacher.id}/${kind}`);
    $("action-msg").textContent = kind === "delete" ? "deleted" : "restored";
    await Promise.all([loadStudies(), loadTeachers()]);
    await showTeacher(d.teacher.id);
  } catch (e) {
    $("action-msg").textContent = e.message;
  }
}

// -- lineage and curves --------------------------------------------------------------------

async function loadLineage() {
  const study = $("lineage-study").value;
  const svg = $("lineage-graph");
  if (!study) {
    lineageGraph(svg, null);
    $("lineage-count").textContent = "";
    return;
  }
  try {
    const g = await get(url("/api/lineage", { study }));
    lineageGraph(svg, g, (id) => showTeacher(id));
    svg.dataset.study = study;
    $("lineage-count").textContent = `${g.nodes.length} trials, ${g.edges.length} taught pairs`;
  } catch (e) {
    showError(e);
  }
}

async function curveOf(study) {
  if (!state.curves.has(study)) state.curves.set(study, await get(url("/api/curve", { study })));
  return state.curves.get(study);
}

async function loadCurves() {
  const plain = $("plain-study").value;
  const recycled = $("recycled-study").value;
  const chosen = [[plain, "plain"], [recycled, "recycled"]].filter(([n]) => n);
  try {
    const curves = await Promise.all(chosen.map(([n]) => curveOf(n)));
    const both = plain && recycled && plain !== recycled
      && curves.every((c) => c.source === "optuna");
    const cmp = both ? await get(url("/api/compare", { plain, recycled })) : null;
    drawCurves(chosen, curves, cmp);
  } catch (e) {
    showError(e);
  }
}

function drawCurves(chosen, curves, cmp) {
  const metric = curves.find((c) => c.metric_name)?.metric_name || "value";
  const byTrial = [];
  const byTime = [];
  curves.forEach((c, i) => {
    const [name, kind] = chosen[i];
    const label = chosen.length === 2 && chosen[0][0] === chosen[1][0] ? `${name} (${kind})` : name;
    byTrial.push({ name: label, kind, dots: true, points: c.trials.filter((t) => t.value !== null).map((t) => [t.number, t.value]) });
    byTrial.push({ name: label, kind, line: "step", points: c.best_by_trial });
    const end = Math.max(0, ...c.trials.map((t) => t.end_s ?? 0));
    byTime.push({ name: label, kind, line: "step", points: c.best_by_time, extendTo: end });
  });
  const target = cmp && cmp.target !== null ? { y: cmp.target, label: `the plain sweep's best final value, ${num(cmp.target)}` } : null;
  lineChart($("plot-trial"), byTrial, { xLabel: "trial", yLabel: metric, integerX: true, empty: "choose a study with trial values" });
  const clockKnown = curves.some((c) => c.wall_clock);
  lineChart($("plot-time"), clockKnown ? byTime : [], { xLabel: "trial-seconds", yLabel: `best ${metric}`, target,
    empty: curves.length ? "no wall-clock recorded (the Optuna study is not in this database)" : "choose a study" });
  $("compare-summary").textContent = cmp ? summary(cmp) : "";
}

function summary(c) {
  if (c.target === null) return "";
  const parts = [`target: ${c.plain}'s best final value, ${num(c.target)}.`];
  const reached = (s) => (s === null ? "never reached it" : `reached it after ${seconds(s)}`);
  parts.push(`${c.plain} ${reached(c.plain_s)}; ${c.recycled} ${reached(c.recycled_s)}`);
  if (c.speedup) parts[1] += ` (${c.speedup.toFixed(2)}x ${c.speedup >= 1 ? "sooner" : "later"})`;
  parts[1] += ".";
  if (c.equal_time_s !== null) {
    parts.push(`Best at equal wall-clock (${seconds(c.equal_time_s)}): ${c.plain} ${num(c.plain_at_equal)}, ${c.recycled} ${num(c.recycled_at_equal)}.`);
  }
  return parts.join(" ");
}

// -- start -----------------------------------------------------------------------------------

async function loadStudies() {
  state.studies = await get("/api/studies");
  state.curves.clear();
  renderStudies();
  fillSelects();
}

function route() {
  const m = /^#teacher\/(\d+)$/.exec(location.hash);
  if (m) showTeacher(Number(m[1]));
}

async function start() {
  hideError();
  try {
    state.info = await get("/api/info");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      $("token-box").hidden = false;
      showError(new ApiError(401, "This server needs its token: enter it at the top right."));
      return;
    }
    throw e;
  }
  const info = state.info;
  $("registry-url").textContent = info.registry;
  $("version").textContent = info.version;
  $("mode").textContent = info.writes_enabled ? "writes need the token" : "read-only";
  $("mode").classList.toggle("write", info.writes_enabled);
  $("token-box").hidden = !(info.writes_enabled || info.reads_need_token);
  await loadStudies();
  await Promise.all([loadTeachers(), loadLineage(), loadCurves()]);
  route();
  document.body.dataset.ready = "1";
}

function wire() {
  table = new TeacherTable($("teachers-table"), $("teacher-count"), (id) => showTeacher(id));
  for (const id of ["filter-study", "filter-status", "filter-state"]) $(id).addEventListener("change", loadTeachers);
  $("filter-text").addEventListener("input", (e) => table.setSearch(e.target.value));
  $("lineage-study").addEventListener("change", loadLineage);
  $("plain-study").addEventListener("change", loadCurves);
  $("recycled-study").addEventListener("change", loadCurves);
  $("delete-btn").addEventListener("click", () => act("delete"));
  $("restore-btn").addEventListener("click", () => act("restore"));
  $("token-box").addEventListener("submit", (e) => {
    e.preventDefault();
    $("token").dispatchEvent(new Event("change"));
  });
  $("token").value = token();
  $("token").addEventListener("change", (e) => {
    setToken(e.target.value.trim());
    if (!state.info) start().catch(showError);
  });
  window.addEventListener("hashchange", route);
  let timer = null;
  window.addEventListener("resize", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { loadLineage(); loadCurves(); }, 200);
  });
}

wire();
start().catch(showError);
