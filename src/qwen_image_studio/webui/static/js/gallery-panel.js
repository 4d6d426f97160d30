// The dataset gallery: every image of the dataset TOML with its caption, bucket (and the crop training
// sees), cache state and problems; edit pairs side by side; captions edited inline (saved on blur or
// Ctrl+Enter), bulk actions with a preview, and undo of every change. The server keeps the history.
import { api } from "./api.js";
import { $, el, debounce } from "./dom.js";
import { t, localText } from "./i18n.js";

const PAGE = 60;

function messageOf(res) {
  return localText(res.data.error || t("gal.failed", { status: res.status }), res.data.error_i18n);
}

/** A thumbnail (`size`: the image's W, H) with the crop training keeps outlined (`fraction`: left, top,
 * right, bottom of the image). */
function picture(src, label, size, fraction, cls) {
  const box = el("figure", { class: `gal-pic ${cls}` });
  const frame = el("div", { class: "gal-frame" });
  if (size) frame.style.aspectRatio = `${size[0]} / ${size[1]}`;
  frame.append(el("img", { src, alt: label, loading: "lazy", decoding: "async" }));
  if (fraction) {
    const [l, tp, r, b] = fraction;
    const crop = el("div", { class: "gal-crop", title: t("gal.crop_hint") });
    crop.style.left = `${l * 100}%`;
    crop.style.top = `${tp * 100}%`;
    crop.style.width = `${(r - l) * 100}%`;
    crop.style.height = `${(b - tp) * 100}%`;
    frame.append(crop);
  }
  box.append(frame, el("figcaption", {}, label));
  return box;
}

export class GalleryPanel {
  /** `ctx`: {datasetValue(), say(text, level)}. */
  constructor(ctx) {
    this.ctx = ctx;
    this.path = null;
    this.items = [];
    this.matched = 0;
    this.total = 0;
    this.loading = false;
    this.preview = null;
    this.summary = null;
    $("gal-load").addEventListener("click", () => this.reload());
    $("gal-filter").addEventListener("change", () => this.reload());
    $("gal-bucket").addEventListener("change", () => this.reload());
    $("gal-search").addEventListener("input", debounce(() => this.reload(), 300));
    $("gal-undo").addEventListener("click", () => this.undo());
    $("gal-bulk-op").addEventListener("change", () => this.syncBulk());
    $("gal-bulk-preview").addEventListener("click", () => this.bulkPreview());
    $("gal-bulk-apply").addEventListener("click", () => this.bulkApply());
    new IntersectionObserver((seen) => {
      if (seen.some((e) => e.isIntersecting)) this.more();
    }).observe($("gal-more"));
  }

  filters() {
    const out = {};
    if ($("gal-filter").value) out.filter = $("gal-filter").value;
    if ($("gal-bucket").value) out.bucket = $("gal-bucket").value;
    if ($("gal-search").value.trim()) out.q = $("gal-search").value.trim();
    return out;
  }

  async reload() {
    const typed = $("dataset-path").value.trim();
    this.path = typed || this.ctx.datasetValue() || null;
    this.items = [];
    this.preview = null;
    $("gal-grid").replaceChildren();
    $("gal-bulk-result").replaceChildren();
    $("gal-bulk-apply").hidden = true;
    if (!this.path) { this.status(t("dataset.none"), "problem"); return; }
    await this.more(true);
  }

  async more(first = false) {
    if (!this.path || this.loading || (!first && this.items.length >= this.matched)) return;
    this.loading = true;
    const query = new URLSearchParams({ path: this.path, offset: this.items.length, limit: PAGE, ...this.filters() });
    const res = await api("GET", `/api/gallery/items?${query}`);
    this.loading = false;
    if (!res.ok) { this.status(messageOf(res), "problem"); return; }
    const data = res.data;
    this.matched = data.matched;
    this.total = data.total;
    if (first) {
      this.showSummary(data);
      this.syncUndo();
    }
    for (const item of data.items) {
      this.items.push(item);
      $("gal-grid").append(this.card(item));
    }
    this.status(t("gal.count", { shown: this.items.length, matched: this.matched, total: this.total }));
  }

  status(text, cls = "") {
    const box = $("gal-status");
    box.textContent = text;
    box.className = `hint ${cls}`;
  }

  /** The datasets' notes: read-only, edit pairs that do not match, mixed control counts; the bucket list. */
  showSummary(data) {
    this.summary = data;
    const notes = $("gal-notes");
    notes.replaceChildren();
    for (const d of data.datasets) {
      if (!d.writable) notes.append(el("p", { class: "problem" }, localText(d.read_only, d.read_only_i18n)));
      const e = d.edit || {};
      for (const p of e.missing_controls || []) notes.append(el("p", { class: "problem" }, t("gal.missing_control", { path: p })));
      for (const p of e.unmatched_controls || []) notes.append(el("p", { class: "problem" }, t("gal.unmatched_control", { path: p })));
      if (e.mixed) {
        const counts = Object.entries(e.control_counts).map(([n, c]) => t("gal.count_of", { n, count: c })).join(", ");
        notes.append(el("p", { class: "need" }, t("gal.mixed_controls", { counts })));
      }
    }
    const select = $("gal-bucket");
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, t("gal.bucket_all")));
    for (const b of data.buckets) {
      const value = `${b.width}x${b.height}`;
      select.append(el("option", { value, selected: value === chosen }, `${b.width}×${b.height} (${b.count})`));
    }
  }

  card(item) {
    const card = el("article", { class: "gal-card", "data-image": item.image });
    const pair = el("div", { class: "gal-pair" });
    pair.append(picture(item.thumb, item.name, item.size, item.crop && item.crop.fraction, "target"));
    for (const c of item.controls) {
      pair.append(picture(c.thumb, t("gal.control", { index: c.index, name: c.name }), c.size, null, "control"));
    }
    card.append(pair);
    const bucket = item.bucket ? `${item.bucket[0]}×${item.bucket[1]}` : "—";
    card.append(el("p", { class: "gal-meta" }, t("gal.meta", { bucket, cache: t(`gal.cache_${item.cache}`) })));
    const box = el("textarea", { class: "gal-caption", rows: 3, "aria-label": t("gal.caption_of", { name: item.name }), placeholder: t("gal.no_caption") });
    box.value = item.caption ?? "";
    box.addEventListener("blur", () => this.save(item, box, card));
    box.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); this.save(item, box, card); }
    });
    card.append(box);
    card.append(el("p", { class: "gal-saved hint", "aria-live": "polite" }));
    for (const p of item.problems) card.append(el("p", { class: "gal-problem" }, p));
    for (const n of [...item.cache_reasons, ...item.notes]) card.append(el("p", { class: "gal-note hint" }, n));
    return card;
  }

  async save(item, box, card) {
    const text = box.value.trim();
    if (text === (item.caption ?? "")) return;
    const out = card.querySelector(".gal-saved");
    const res = await api("PUT", "/api/gallery/caption", { path: this.path, image: item.image, expected: item.caption, caption: text });
    if (!res.ok) { out.textContent = messageOf(res); out.className = "gal-saved problem"; return; }
    item.caption = res.data.caption;
    out.textContent = t("gal.saved");
    out.className = "gal-saved ok";
    $("gal-undo").disabled = false;
  }

  /** Undo is offered while the dataset has a change not undone yet (also after a reload). */
  async syncUndo() {
    const res = await api("GET", `/api/gallery/history?${new URLSearchParams({ path: this.path, limit: 50 })}`);
    $("gal-undo").disabled = !(res.ok && res.data.batches.some((b) => !b.undone));
  }

  async undo() {
    const res = await api("POST", "/api/gallery/undo", { path: this.path });
    if (!res.ok) { this.status(messageOf(res), "problem"); return; }
    await this.reload();
    const restored = res.data.restored;
    this.status(t("gal.undone", { count: Array.isArray(restored) ? restored.length : restored }), "ok");
  }

  syncBulk() {
    const replace = $("gal-bulk-op").value === "replace";
    $("gal-bulk-text-row").hidden = replace;
    $("gal-bulk-find-row").hidden = !replace;
    $("gal-bulk-replace-row").hidden = !replace;
  }

  action() {
    const op = $("gal-bulk-op").value;
    if (op === "replace") return { op, find: $("gal-bulk-find").value, replace: $("gal-bulk-replace").value };
    return { op, text: $("gal-bulk-text").value };
  }

  async bulkPreview() {
    const box = $("gal-bulk-result");
    box.replaceChildren();
    const apply = $("gal-bulk-apply");
    apply.hidden = true;
    if (!this.path) this.path = $("dataset-path").value.trim() || this.ctx.datasetValue();
    const body = { path: this.path, action: this.action(), ...this.filters() };
    const res = await api("POST", "/api/gallery/bulk/preview", body);
    if (!res.ok) { box.append(el("p", { class: "problem" }, messageOf(res))); return; }
    this.preview = { action: body.action, changes: res.data.changes };
    const n = res.data.changes.length;
    box.append(el("p", { class: "head" }, t("gal.preview_head", { count: n, unchanged: res.data.unchanged, skipped: res.data.skipped.length })));
    const list = el("ul", { class: "gal-preview" });
    for (const c of res.data.changes.slice(0, 50)) {
      const li = el("li");
      li.append(el("span", { class: "name" }, c.name), el("del", {}, c.before), el("ins", {}, c.after));
      list.append(li);
    }
    box.append(list);
    if (n > 50) box.append(el("p", { class: "hint" }, t("gal.preview_more", { count: n - 50 })));
    if (n && res.data.writable) {
      apply.textContent = t("gal.apply", { count: n });
      apply.hidden = false;
    }
  }

  async bulkApply() {
    if (!this.preview) return;
    const expected = this.preview.changes.map((c) => ({ image: c.image, before: c.before }));
    const res = await api("POST", "/api/gallery/bulk/apply", { path: this.path, action: this.preview.action, expected });
    const box = $("gal-bulk-result");
    box.replaceChildren();
    $("gal-bulk-apply").hidden = true;
    this.preview = null;
    if (!res.ok) { box.append(el("p", { class: "problem" }, messageOf(res))); return; }
    await this.reload();
    box.append(el("p", { class: "ok" }, t("gal.applied", { count: res.data.changed })));
    $("gal-undo").disabled = false;
  }

  /** Re-render in the page's language (the cards' fixed words). */
  render() {
    if (this.summary) this.reload();
  }
}
