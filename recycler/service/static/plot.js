// Line charts in plain SVG: axes with "nice" ticks, series as lines and/or dots, a legend.
import { clear, num, s } from "./dom.js";

const M = { top: 14, right: 16, bottom: 34, left: 52 };

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = [1, 2, 2.5, 5, 10].find((f) => f * power >= raw) || 10;
  return unit * power;
}

function ticks(lo, hi, count, integers) {
  if (hi === lo) { hi = lo + 1; lo -= integers ? 0 : 1e-9; }
  let step = niceStep(hi - lo, count);
  if (integers) step = Math.max(1, Math.round(step));
  const out = [];
  for (let v = Math.ceil(lo / step) * step, i = 0; v <= hi + step * 1e-9 && i < 50; v += step, i += 1) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

function extent(values, pad) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (!Number.isFinite(lo)) return [0, 1];
  if (lo === hi) { lo -= Math.abs(lo) * 0.05 || 0.5; hi += Math.abs(hi) * 0.05 || 0.5; }
  const p = (hi - lo) * pad;
  return [lo - p, hi + p];
}

/**
 * Draw series on an <svg>.
 * series: [{name, kind: "plain"|"recycled"|"other", points: [[x, y]], line: "step"|"straight"|null, dots: bool}]
 * opts: {xLabel, yLabel, integerX, target: {y, label}, empty: "text when nothing to plot"}
 */
export function lineChart(svg, series, opts = {}) {
  clear(svg);
  const box = svg.getBoundingClientRect();
  const W = Math.max(320, Math.round(box.width || 600));
  const H = Math.max(160, Math.round(box.height || 230));
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const all = series.flatMap((sr) => sr.points);
  if (all.length === 0) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty", text: opts.empty || "nothing to plot" }));
    return;
  }
  const ys = all.map((p) => p[1]);
  if (opts.target) ys.push(opts.target.y);
  const [x0, x1] = opts.integerX
    ? [Math.min(...all.map((p) => p[0])) - 0.5, Math.max(...all.map((p) => p[0])) + 0.5]
    : [0, Math.max(...all.map((p) => p[0])) * 1.03 || 1];
  const [y0, y1] = extent(ys, 0.08);
  const px = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
  const py = (y) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);

  const axes = s("g", { class: "axis" });
  for (const t of ticks(y0, y1, 5, false)) {
    axes.append(s("line", { class: "grid-line", x1: M.left, x2: W - M.right, y1: py(t), y2: py(t) }));
    axes.append(s("g", { class: "tick" }, s("text", { x: M.left - 6, y: py(t) + 4, "text-anchor": "end", text: num(t, 3) })));
  }
  const xt = opts.integerX ? ticks(Math.ceil(x0), Math.floor(x1), 8, true) : ticks(0, x1, 6, false);
  for (const t of xt) {
    axes.append(s("line", { x1: px(t), x2: px(t), y1: H - M.bottom, y2: H - M.bottom + 4 }));
    axes.append(s("g", { class: "tick" }, s("text", { x: px(t), y: H - M.bottom + 16, "text-anchor": "middle", text: num(t, 3) })));
  }
  axes.append(s("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }));
  axes.append(s("line", { x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom }));
  axes.append(s("text", { class: "axis-label", x: (M.left + W - M.right) / 2, y: H - 4, "text-anchor": "middle", text: opts.xLabel || "" }));
  axes.append(s("text", { class: "axis-label", x: 12, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${(M.top + H - M.bottom) / 2})`, text: opts.yLabel || "" }));
  svg.append(axes);

  if (opts.target) {
    const y = py(opts.target.y);
    svg.append(s("line", { class: "target", x1: M.left, x2: W - M.right, y1: y, y2: y },
      s("title", { text: opts.target.label })));
  }
  for (const sr of series) {
    const cls = `series-${sr.kind || "other"}`;
    const g = s("g", { class: `series ${cls}`, "data-series": sr.name });
    const pts = sr.points;
    if (sr.line && pts.length) {
      let d = `M${px(pts[0][0])},${py(pts[0][1])}`;
      for (let i = 1; i < pts.length; i += 1) {
        const [x, y] = pts[i];
        d += sr.line === "step" ? `H${px(x)}V${py(y)}` : `L${px(x)},${py(y)}`;
      }
      if (sr.extendTo !== undefined && sr.line === "step") d += `H${px(sr.extendTo)}`;
      g.append(s("path", { class: `line ${cls}`, d }));
    }
    if (sr.dots) {
      for (const [x, y] of pts) {
        g.append(s("circle", { cx: px(x), cy: py(y), r: 3.5, class: cls },
          s("title", { text: `${sr.name}: ${opts.xLabel || "x"} ${num(x, 4)}, ${num(y, 4)}` })));
      }
    }
    svg.append(g);
  }
  // legend, top right
  const names = [...new Map(series.map((sr) => [sr.name, sr.kind])).entries()];
  let lx = W - M.right - 8;
  const legend = s("g", { class: "legend" });
  for (const [name, kind] of names.reverse()) {
    const width = 18 + 6.5 * name.length;
    lx -= width;
    legend.append(s("rect", { x: lx, y: M.top - 2, width: 10, height: 10, class: `series-${kind || "other"}` }));
    legend.append(s("text", { x: lx + 14, y: M.top + 7, text: name }));
    lx -= 10;
  }
  svg.append(legend);
}
