// Renders the form model as HTML inputs and reads them back. All text goes in through textContent.
import { currentLanguage, t, tm } from "./i18n.js";
import { el } from "./dom.js";
import { badgeStages, formatNumber, fromInput, toInput, visibleIn } from "./form-model.js";

function shownDefault(field) {
  const d = field.default;
  if (field.kind === "bool") return d ? t("form.on") : t("form.off");
  if (d === null || (Array.isArray(d) && d.length === 0)) return t("form.empty");
  if (Array.isArray(d)) return d.join(" ");
  return typeof d === "number" ? formatNumber(d) : String(d);
}

const OPEN_KEY = "studio_open_sections";

/** The sections (and "more options" parts) the user left open, as a set; null on a first visit. */
function remembered() {
  try {
    const list = JSON.parse(localStorage.getItem(OPEN_KEY));
    return Array.isArray(list) ? new Set(list.map(String)) : null;
  } catch (e) { return null; }
}

function remember(open) {
  try { localStorage.setItem(OPEN_KEY, JSON.stringify([...open])); } catch (e) { /* storage off */ }
}

/** A flag as <code> that a narrow column breaks only after an underscore, never after the leading "--". */
function flagCode(flag) {
  const code = el("code", { class: "flag-name" });
  flag.split("_").forEach((part, i, parts) => {
    code.append(document.createTextNode(i < parts.length - 1 ? `${part}_` : part));
    if (i < parts.length - 1) code.append(document.createElement("wbr"));
  });
  return code;
}

/** A JSON value that shares nothing with the original. */
function clone(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

export class FormView {
  /** `placed` maps a section's group to an element elsewhere on the page where that section is shown
   * instead of in the form (e.g. the captioning settings in the Dataset tab); its values are the form's. */
  constructor(form, model, onInput, placed = {}, prefix = "") {
    this.form = form;
    this.prefix = prefix; // before every element id, when two views share a page (e.g. "gen-")
    this.model = model;
    this.onInput = onInput;
    this.placed = placed;
    this.edit = false;
    this.inputs = {};
    this.carried = {}; // values of the fields the form does not show (x-hidden), kept as they came
    this.openSections = remembered() || new Set(model.sections.filter((s) => !s.collapsed).map((s) => s.name));
    for (const box of [form, ...Object.values(placed)]) {
      box.addEventListener("input", (e) => this.changed(e));
      box.addEventListener("change", (e) => this.changed(e));
    }
    form.addEventListener("submit", (e) => e.preventDefault());
  }

  changed(event) {
    const name = event.target && event.target.dataset ? event.target.dataset.field : null;
    if (!name) return;
    const linked = this.linkSwitches(name);
    this.onInput(name, event.type);
    for (const other of linked) this.onInput(other, "change");
  }

  /** After switch `name` changed: a switch it needs (x-needs) goes on with it, and the switches that need
   * it go off with it. Only a convenience: the server still judges the values. Returns what it changed. */
  linkSwitches(name) {
    const field = this.model.byName[name];
    const input = this.inputs[name];
    if (!field || field.kind !== "bool" || !input) return [];
    const flip = (other, on) => {
      const box = this.inputs[other];
      if (!box || box.type !== "checkbox" || box.checked === on) return [];
      box.checked = on;
      return [other];
    };
    if (input.checked) return field.needs ? flip(field.needs, true) : [];
    return this.model.fields.filter((f) => f.needs === name).flatMap((f) => flip(f.name, false));
  }

  /** Build every section and input (again, e.g. after a language switch), keeping the values. */
  render() {
    const values = Object.keys(this.inputs).length ? this.read() : null;
    this.form.replaceChildren();
    this.inputs = {};
    this.rows = {};
    for (const section of this.model.sections) {
      const box = this.placed[section.name];
      if (box) box.replaceChildren(this.placedSection(section));
      else this.form.append(this.section(section));
    }
    if (values) this.write(values);
    this.applyMode();
  }

  section(section) {
    const details = el("details", { class: "section", "data-group": section.name, open: this.openSections.has(section.name) });
    details.addEventListener("toggle", () => {
      if (details.open) this.openSections.add(section.name); else this.openSections.delete(section.name);
      remember(this.openSections);
    });
    details.append(el("summary", {}, t(`group.${section.name}`)));
    if (section.name === "advanced") details.append(el("p", { class: "hint" }, t("form.advanced_hint")));
    const basic = section.fields.filter((f) => f.basic);
    const rest = section.fields.filter((f) => !f.basic);
    const grid = el("div", { class: "fields" });
    for (const field of basic.length ? basic : rest) grid.append(this.row(field));
    details.append(grid);
    if (basic.length && rest.length) details.append(this.more(section.name, rest));
    return details;
  }

  /** A section shown outside the form: its main fields, the others under "more options". */
  placedSection(section) {
    const box = el("div", { class: "placed-section", "data-group": section.name });
    const basic = section.fields.filter((f) => f.basic);
    const rest = section.fields.filter((f) => !f.basic);
    const grid = el("div", { class: "fields" });
    for (const field of basic.length ? basic : rest) grid.append(this.row(field));
    box.append(grid);
    if (basic.length && rest.length) box.append(this.more(section.name, rest));
    return box;
  }

  /** A section's other fields, folded under "more options (N)" until opened. */
  more(name, fields) {
    const key = `${name}:more`;
    const box = el("details", { class: "more", "data-more": name, open: this.openSections.has(key) });
    box.addEventListener("toggle", () => {
      if (box.open) this.openSections.add(key); else this.openSections.delete(key);
      remember(this.openSections);
    });
    box.append(el("summary", {}, t("form.more", { count: fields.length })));
    const grid = el("div", { class: "fields" });
    for (const field of fields) grid.append(this.row(field));
    box.append(grid);
    return box;
  }

  /** Open every folded part around a field's row (its section and its "more options"). */
  reveal(name) {
    let node = this.rows[name];
    while (node && node !== this.form && node !== document.body) {
      if (node.tagName === "DETAILS") node.open = true;
      node = node.parentElement;
    }
  }

  row(field) {
    const id = `${this.prefix}f-${field.name}`;
    const row = el("div", { class: `field kind-${field.kind}`, "data-row": field.name });
    const head = el("div", { class: "field-head" });
    const label = el("label", { for: id, class: "flag" });
    label.append(flagCode(field.flag));
    head.append(label);
    const required = badgeStages(this.model, field);
    if (required.length) {
      const stages = required.map((s) => t(`stage.${s}`)).join(" · ");
      head.append(el("span", { class: "badge" }, `${t("form.required_for")} ${stages}`));
    }
    row.append(head);
    const input = this.input(field, id);
    row.append(input);
    row.append(el("p", { class: "help", id: `${this.prefix}h-${field.name}` }, field.help[currentLanguage()] || field.help.en));
    const meta = [`${t("form.default")}: ${shownDefault(field)}`];
    if (field.allowed && field.kind !== "choice") meta.push(`${t("form.allowed")}: ${tm(field.allowed)}`);
    if (field.recommended) meta.push(`${t("form.recommended")}: ${tm(field.recommended)}`);
    if (field.path) meta.push(t(`form.path.${field.path}`));
    if (field.kind === "list") meta.push(field.metavar ? t("form.list_hint_items", { metavar: field.metavar }) : t("form.list_hint"));
    row.append(el("p", { class: "meta" }, meta.join(" · ")));
    row.append(el("p", { class: "problem", id: `${this.prefix}p-${field.name}`, "aria-live": "polite" }));
    this.rows[field.name] = row;
    return row;
  }

  input(field, id) {
    const common = { id, name: field.name, "data-field": field.name, "aria-describedby": `${this.prefix}h-${field.name} ${this.prefix}p-${field.name}` };
    let input;
    if (field.kind === "bool") {
      input = el("input", { ...common, type: "checkbox", class: "toggle" });
    } else if (field.kind === "choice" && field.enumValues) {
      input = el("select", common);
      if (field.optional) input.append(el("option", { value: "" }, t("form.empty")));
      for (const value of field.enumValues) input.append(el("option", { value }, String(value)));
    } else if (field.kind === "list") {
      input = el("textarea", { ...common, rows: 2, spellcheck: "false" });
    } else {
      const numeric = field.kind === "int" || field.kind === "float";
      input = el("input", {
        ...common, type: "text", autocomplete: "off", spellcheck: "false",
        inputmode: numeric ? (field.kind === "int" ? "numeric" : "decimal") : null,
        list: field.choices.length ? `${this.prefix}dl-${field.name}` : null,
      });
      if (field.choices.length) {
        const wrap = el("div", { class: "with-list" });
        const list = el("datalist", { id: `${this.prefix}dl-${field.name}` });
        for (const value of field.choices) list.append(el("option", { value }));
        wrap.append(input, list);
        this.inputs[field.name] = input;
        return wrap;
      }
    }
    this.inputs[field.name] = input;
    return input;
  }

  /** The form's values as the API takes them. */
  read() {
    const values = {};
    for (const field of this.model.fields) {
      const input = this.inputs[field.name];
      if (input) values[field.name] = fromInput(field, field.kind === "bool" ? input.checked : input.value);
      else if (field.hidden && field.name in this.carried) values[field.name] = clone(this.carried[field.name]);
    }
    return values;
  }

  /** Put values into the inputs (fields absent from `values` keep theirs). */
  write(values) {
    for (const field of this.model.fields) {
      const input = this.inputs[field.name];
      if (!(field.name in values)) continue;
      if (!input) {
        if (field.hidden) this.carried[field.name] = clone(values[field.name]);
        continue;
      }
      const shownValue = toInput(field, values[field.name]);
      if (field.kind === "bool") input.checked = shownValue;
      else {
        if (input.tagName === "SELECT" && ![...input.options].some((o) => o.value === shownValue)) {
          input.append(el("option", { value: shownValue }, shownValue));
        }
        input.value = shownValue;
        if (input.tagName === "TEXTAREA") input.rows = Math.max(2, shownValue.split("\n").length);
      }
    }
    this.syncMode();
  }

  /** Whether the edit-mode field currently holds an edit value. */
  isEdit() {
    const sw = this.model.editSwitch;
    if (!sw) return false;
    if (!this.inputs[sw.field] && this.editOf) return this.editOf(); // a panel follows the main form
    return sw.editValues.includes(this.inputs[sw.field] ? this.inputs[sw.field].value : null);
  }

  /** Set the edit-mode field from the switch (keeps an edit version already chosen). */
  setEdit(on) {
    const sw = this.model.editSwitch;
    if (!sw || !this.inputs[sw.field]) return;
    const input = this.inputs[sw.field];
    if (on && !sw.editValues.includes(input.value)) input.value = sw.editValues[0];
    if (!on) input.value = sw.offValue;
    this.syncMode();
  }

  syncMode() {
    this.edit = this.isEdit();
    this.applyMode();
  }

  applyMode() {
    for (const field of this.model.fields) {
      if (this.rows && this.rows[field.name]) this.rows[field.name].hidden = !visibleIn(field, this.edit);
    }
  }

  /** Show problems: `byField` maps a field to [{text, level}] (level "error", "need" or "warn"). */
  showProblems(byField) {
    for (const field of this.model.fields) {
      const row = this.rows[field.name];
      const out = row ? row.querySelector(".problem") : null;
      if (!out || !row) continue;
      const list = byField[field.name] || [];
      out.textContent = list.map((p) => p.text).join("\n");
      row.classList.toggle("has-error", list.some((p) => p.level === "error"));
      row.classList.toggle("has-need", list.length > 0 && list.every((p) => p.level !== "error") && list.some((p) => p.level === "need"));
      row.classList.toggle("has-warn", list.length > 0 && list.every((p) => p.level === "warn"));
      const input = this.inputs[field.name];
      if (input) input.setAttribute("aria-invalid", list.some((p) => p.level === "error") ? "true" : "false");
      if (list.some((p) => p.level === "error")) this.reveal(field.name);
    }
  }
}
