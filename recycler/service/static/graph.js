// The lineage of a study as a graph: one node per trial, one arrow per "taught" pair
// (teacher's trial -> student trial), as wide as the steps distilled; dashed when the student
// only started from the teacher's weights (an init parent, no KD).
import { clear, num, s } from "./dom.js";

const R = 14;
const ROW = 92;
const MIN_GAP = 64;

export function lineageGraph(svg, graph, onNode) {
  clear(svg);
  const box = svg.getBoundingClientRect();
  const W0 = Math.max(360, Math.round(box.width || 600));
  if (!graph || graph.nodes.length === 0) {
    svg.setAttribute("viewBox", `0 0 ${W0} 120`);
    svg.append(s("text", { x: W0 / 2, y: 60, "text-anchor": "middle", class: "empty",
      text: graph ? "no lineage recorded for this study" : "no study with lineage" }));
    return;
  }
  // rows: the study's own trials at the bottom, each other teacher study above it
  const studies = [...new Set(graph.nodes.map((n) => (n.missing ? "(gone)" : n.study)))];
  studies.sort((a, b) => (a === graph.study ? 1 : b === graph.study ? -1 : a.localeCompare(b)));
  const rows = new Map(studies.map((name) => [name, []]));
  for (const n of graph.nodes) rows.get(n.missing ? "(gone)" : n.study).push(n);
  for (const list of rows.values()) list.sort((a, b) => a.trial_number - b.trial_number);
  const longest = Math.max(...[...rows.values()].map((l) => l.length));
  const W = Math.max(W0, 90 + longest * MIN_GAP);
  const H = 30 + studies.length * ROW;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);

  const pos = new Map();
  studies.forEach((name, r) => {
    const list = rows.get(name);
    const y = 80 + r * ROW;
    const gap = (W - 110) / Math.max(1, list.length);
    list.forEach((n, i) => pos.set(n.id, { x: 90 + gap * (i + 0.5), y }));
    svg.append(s("text", { class: "row-label", x: 6, y: y + 4, text: name.length > 14 ? `${name.slice(0, 13)}…` : name },
      s("title", { text: name })));
  });

  const defs = s("defs", {},
    s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9, markerHeight: 9,
      markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
      s("path", { d: "M0,0L10,5L0,10z" })));
  svg.append(defs);
  const maxSteps = Math.max(1, ...graph.edges.map((e) => e.steps));
  const edges = s("g", { class: "edges" });
  for (const e of graph.edges) {
    const a = pos.get(e.source);
    const b = pos.get(e.target);
    if (!a || !b) continue;
    const dx = b.x - a.x;
    const dy = b.y - a.y;
    const len = Math.hypot(dx, dy) || 1;
    const [ax, ay] = [a.x + (dx / len) * R, a.y + (dy / len) * R];
    const [bx, by] = [b.x - (dx / len) * (R + 2), b.y - (dy / len) * (R + 2)];
    let d;
    if (Math.abs(dy) < 1) { // same row: an arc above, higher for longer jumps
      const lift = Math.min(ROW * 0.9, 16 + Math.abs(dx) * 0.3);
      d = `M${ax},${a.y - R * 0.6}Q${(ax + bx) / 2},${a.y - lift} ${bx},${b.y - R * 0.6}`;
    } else {
      d = `M${ax},${ay}C${ax},${(ay + by) / 2} ${bx},${(ay + by) / 2} ${bx},${by}`;
    }
    const width = 1 + 5 * Math.sqrt(e.steps / maxSteps);
    const kinds = e.kinds || ["kd"];
    const taught = kinds.includes("kd");
    const init = kinds.includes("init") ? `${e.target} started from ${e.source}'s weights` : "";
    const kd = taught ? `${e.source} taught ${e.target}: ${e.steps} steps distilled` +
      (e.overhead === null ? "" : `, teacher overhead ${(100 * e.overhead).toFixed(1)}%`) : "";
    edges.append(s("path", { class: taught ? "edge" : "edge init", d, "stroke-width": width.toFixed(2),
      "marker-end": "url(#arrow)", "data-source": e.source, "data-target": e.target, "data-steps": e.steps,
      "data-kinds": kinds.join(" ") },
      s("title", { text: [init, kd].filter(Boolean).join("; ") })));
  }
  svg.append(edges);

  const nodes = s("g", { class: "nodes" });
  for (const n of graph.nodes) {
    const p = pos.get(n.id);
    const cls = ["node", n.in_study ? "" : "outside", n.missing ? "missing" : ""].filter(Boolean).join(" ");
    const label = n.missing ? "?" : String(n.trial_number);
    const what = n.missing ? `teacher ${n.id.slice(1)} (no longer in the registry)`
      : `trial ${n.trial_number} of ${n.study} (${n.role})` +
        (n.metric_value === null ? "" : `, value ${num(n.metric_value)}`) +
        (n.teacher_ids.length ? `, teacher id ${n.teacher_ids.join(", ")}` : "");
    const g = s("g", { class: cls, "data-id": n.id, "data-role": n.role, transform: `translate(${p.x},${p.y})`,
      onclick: () => onNode && n.teacher_ids.length && onNode(n.teacher_ids[n.teacher_ids.length - 1]) },
      s("title", { text: what }),
      s("circle", { r: R }),
      s("text", { class: "num", text: label }),
      s("text", { class: "val", y: R + 13, text: n.metric_value === null ? "" : num(n.metric_value, 3) }));
    nodes.append(g);
  }
  svg.append(nodes);
}
