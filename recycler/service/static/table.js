// The teachers table: rows from the API, sorted by a clicked column, narrowed by a search.
import { bytes, clear, compactJSON, h, num, utc } from "./dom.js";

function sortValue(row, key) {
  const v = row[key];
  if (key === "params") return compactJSON(v);
  return v === null || v === undefined ? null : v;
}

function compare(a, b) {
  if (a === b) return 0;
  if (a === null) return 1; // missing values last
  if (b === null) return -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

export class TeacherTable {
  constructor(table, countEl, onSelect) {
    this.table = table;
    this.body = table.querySelector("tbody");
    this.countEl = countEl;
    this.onSelect = onSelect;
    this.rows = [];
    this.search = "";
    this.sort = { key: "id", dir: 1 };
    this.selected = null;
    for (const th of table.querySelectorAll("th[data-key]")) {
      th.addEventListener("click", () => {
        const key = th.dataset.key;
        this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : 1 };
        this.render();
      });
    }
  }

  setRows(rows) {
    this.rows = rows;
    this.render();
  }

  setSearch(text) {
    this.search = text.trim().toLowerCase();
    this.render();
  }

  select(id) {
    this.selected = id;
    for (const tr of this.body.rows) tr.classList.toggle("selected", Number(tr.dataset.id) === id);
  }

  visible() {
    const q = this.search;
    const rows = q
      ? this.rows.filter((r) => [r.study, compactJSON(r.params), compactJSON(r.tags), r.output_signature, r.metric_name, String(r.id)]
        .some((t) => String(t ?? "").toLowerCase().includes(q)))
      : this.rows.slice();
    const { key, dir } = this.sort;
    rows.sort((a, b) => dir * compare(sortValue(a, key), sortValue(b, key)) || a.id - b.id);
    return rows;
  }

  render() {
    for (const th of this.table.querySelectorAll("th[data-key]")) {
      th.classList.toggle("asc", th.dataset.key === this.sort.key && this.sort.dir > 0);
      th.classList.toggle("desc", th.dataset.key === this.sort.key && this.sort.dir < 0);
    }
    const rows = this.visible();
    clear(this.body);
    for (const r of rows) {
      const tr = h("tr", { class: "clickable", "data-id": r.id, "data-status": r.status, onclick: () => this.onSelect(r.id) },
        h("td", { class: "num", text: r.id }),
        h("td", { text: r.study }),
        h("td", { class: "num", text: r.trial_number }),
        h("td", { class: "num", text: r.step }),
        h("td", { class: "num", text: num(r.metric_value) }),
        h("td", { text: r.metric_name ?? "-" }),
        h("td", { text: r.final ? r.trial_state : `${r.trial_state} (intermediate)` }),
        h("td", { class: `status-${r.status}`, text: r.status }),
        h("td", { class: "params", text: compactJSON(r.params), title: compactJSON(r.params) }),
        h("td", { class: "num", text: bytes(r.size_bytes) }),
        h("td", { text: utc(r.created_at) }));
      if (r.id === this.selected) tr.classList.add("selected");
      this.body.append(tr);
    }
    const total = this.rows.length;
    this.countEl.textContent = rows.length === total ? `${total} shown` : `${rows.length} of ${total} shown`;
  }
}
