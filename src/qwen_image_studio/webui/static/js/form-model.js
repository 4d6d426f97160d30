// The form's model, derived from the parameter schema alone: sections, fields, value conversion and checks.
// No parameter name, default, range or choice is written here; all of them come from /api/schema.
// Pure functions (no DOM), so they can be tested outside a browser.

/** Sections (in the schema's x-groups order) holding the schema's fields (in x-order).

Fields marked x-hidden (no stage of theirs is one the UI launches) are in `fields` but in no section:
the form shows no input for them and carries their values (see FormView), so nothing saved is lost. */
export function buildFormModel(schema, panels = {}) {
  const fields = Object.entries(schema.properties || {})
    .map(([name, prop]) => fieldOf(name, prop))
    .sort((a, b) => a.order - b.order);
  if (panels.only) return panelModel(schema, fields, panels.only);
  // groups shown by a panel of their own (`panels.exclude`) get no section here: carried like hidden ones
  for (const f of fields) if ((panels.exclude || []).includes(f.group)) f.hidden = true;
  const shown = fields.filter((f) => !f.hidden);
  const groups = schema["x-groups"] || [];
  const sections = groups.map((name) => ({
    name, collapsed: name === "advanced", fields: shown.filter((f) => f.group === name),
  }));
  const strays = shown.filter((f) => !groups.includes(f.group));
  if (strays.length) sections.push({ name: "other", collapsed: true, fields: strays });
  const byName = Object.fromEntries(fields.map((f) => [f.name, f]));
  const sw = schema["x-edit-switch"] || null;
  const editSwitch = sw && byName[sw.field]
    ? { field: sw.field, editValues: sw["edit-values"] || [], offValue: sw["off-value"] } : null;
  const uiStages = schema["x-ui-stages"] || null; // null: every stage
  return { sections: sections.filter((s) => s.fields.length), fields, byName, editSwitch, uiStages };
}

/** The model of a panel that shows one group (and the fields that name it in x-also) in its own values. */
function panelModel(schema, all, group) {
  const fields = all.filter((f) => !f.hiddenByStage && (f.group === group || f.also.includes(group)));
  for (const f of fields) {
    f.hidden = false;
    if (f.group !== group) f.basic = true; // a field shown here from another group is a main one here
  }
  const byName = Object.fromEntries(fields.map((f) => [f.name, f]));
  const sw = schema["x-edit-switch"] || null;
  const editSwitch = sw ? { field: sw.field, editValues: sw["edit-values"] || [], offValue: sw["off-value"] } : null;
  return {
    sections: [{ name: group, collapsed: false, fields }], fields, byName, editSwitch,
    uiStages: schema["x-ui-stages"] || null,
  };
}

/** The stages of a field's "required for" badge: those the UI launches. */
export function badgeStages(model, field) {
  return model.uiStages ? field.requiredFor.filter((s) => model.uiStages.includes(s)) : field.requiredFor;
}

function fieldOf(name, prop) {
  const branches = prop.anyOf || [prop];
  const main = branches.find((b) => b.type !== "null") || {};
  return {
    name,
    kind: prop["x-kind"] || "str",
    flag: prop["x-flag"] || `--${name}`,
    group: prop["x-group"] || "other",
    order: prop["x-order"] ?? 0,
    help: { en: prop.description || "", "zh-CN": prop["x-help-zh"] || prop.description || "" },
    default: prop.default ?? null,
    optional: branches.some((b) => b.type === "null"),
    enumValues: main.enum || prop.enum || ("const" in main ? [main.const] : null),
    choices: prop["x-choices"] || [],
    minimum: main.minimum, maximum: main.maximum,
    exclusiveMinimum: main.exclusiveMinimum, exclusiveMaximum: main.exclusiveMaximum,
    pattern: main.pattern || null,
    maxLength: main.maxLength ?? null,
    requiredFor: prop["x-required-for"] || [],
    stages: prop["x-stages"] || [],
    path: prop["x-path"] || "",
    allowed: prop["x-allowed-i18n"] || prop["x-allowed"] || "", // a message ({key, vars}) or plain text
    recommended: prop["x-recommended-i18n"] || "", // the range a value is warned outside of (a message)
    mode: prop["x-mode"] || "", // "edit" or "t2i": shown only in that mode
    hidden: Boolean(prop["x-hidden"]), // no input: its value is carried as it is
    hiddenByStage: Boolean(prop["x-hidden"]), // hidden by the schema itself (no UI stage, or cli_only)
    also: prop["x-also"] || [], // other groups whose panel shows it too
    metavar: prop["x-metavar"] || "", // a list's items as the CLI names them (none: KEY=VALUE pairs)
    needs: prop["x-needs"] || null, // the switch this switch needs on
    basic: Boolean(prop["x-basic"]), // shown first in its section; the others fold under "more options"
  };
}

/** Whether a field is shown in the given mode (edit or not). */
export function visibleIn(field, edit) {
  return !field.mode || field.mode === (edit ? "edit" : "t2i");
}

/** A number as people type it (5e-5 rather than 0.00005). */
export function formatNumber(value) {
  if (typeof value !== "number") return String(value);
  if (value !== 0 && Math.abs(value) < 1e-3) return value.toExponential().replace(/\.?0+e/, "e").replace("e-0", "e-");
  return String(value);
}

/** The input's content (string, or boolean for switches) for a value. */
export function toInput(field, value) {
  if (field.kind === "bool") return Boolean(value);
  if (value === null || value === undefined) return "";
  if (field.kind === "list") return (Array.isArray(value) ? value : [value]).join("\n");
  if (field.kind === "int" || field.kind === "float") return formatNumber(value);
  return String(value);
}

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** The JSON value for an input's content; text that is not a number is sent as typed (the server says why). */
export function fromInput(field, raw) {
  if (field.kind === "bool") return Boolean(raw);
  if (field.kind === "list") return String(raw).split("\n").map((s) => s.trim()).filter(Boolean);
  const text = String(raw).trim();
  if (text === "") return field.optional ? null : "";
  if (field.kind === "int" || field.kind === "float") return NUMBER.test(text) ? Number(text) : text;
  return text;
}

/** A value as the server's messages show it: text quoted, except what was typed into a number field. */
function shown(field, value) {
  if (typeof value !== "string") return formatNumber(value);
  return field.kind === "int" || field.kind === "float" ? value : `'${value}'`;
}

/** The server's wording of a value that is not a number of the field's kind (params/validate.py `_message`). */
function notNumber(field, vars) {
  const problem = { key: field.kind === "int" ? "v.not_int" : "v.not_number", vars: { flag: vars.flag, value: vars.value } };
  return field.allowed ? { key: "v.with_allowed", vars: { problem, allowed: field.allowed } } : problem;
}

/** The first problem of one value as {key, vars} for the translation table, or null; worded with the same
 * key and values as the server's message for the same value, so the field and Save/Run say the same. */
export function checkValue(field, value) {
  const vars = { flag: field.flag, value: shown(field, value), allowed: field.allowed };
  if (value === null) return null;
  if (field.kind === "int" || field.kind === "float") {
    if (value === "") return { key: "v.empty_number", vars };
    if (typeof value !== "number" || !Number.isFinite(value)) return notNumber(field, vars);
    if (field.kind === "int" && !Number.isInteger(value)) return notNumber(field, vars);
    const low = field.minimum !== undefined && value < field.minimum;
    const high = field.maximum !== undefined && value > field.maximum;
    const lowEx = field.exclusiveMinimum !== undefined && value <= field.exclusiveMinimum;
    const highEx = field.exclusiveMaximum !== undefined && value >= field.exclusiveMaximum;
    return low || high || lowEx || highEx ? { key: "v.range", vars } : null;
  }
  if (field.enumValues && !field.enumValues.includes(value)) return { key: "v.choice", vars };
  if (typeof value === "string") {
    if (field.maxLength !== null && value.length > field.maxLength) {
      return { key: "v.too_long", vars: { ...vars, max: field.maxLength } };
    }
    if (field.pattern && value !== "") {
      let re = null;
      try { re = new RegExp(field.pattern, "u"); } catch (e) { re = null; }
      if (re && !re.test(value)) return { key: "v.pattern", vars };
    }
  }
  return null;
}

/** Fields the given stages need that have no value, as [{field, key, vars}]. */
export function missingFor(model, values, stages, edit) {
  const out = [];
  for (const field of model.fields) {
    if (!visibleIn(field, edit)) continue;
    if (!field.requiredFor.some((s) => stages.includes(s))) continue;
    const value = values[field.name];
    if (value === null || value === undefined || value === "") {
      out.push({ field: field.name, key: "v.required", vars: { flag: field.flag } });
    }
  }
  return out;
}
