// Messages as {key, vars}, filled in from translation tables: the page's own strings and the server's
// structured messages (problems, errors, job reasons), whose variables may be nested messages or joined
// lists ({join: [...], sep: key}). Pure functions (no DOM), so that they can be tested outside a browser.
const PLACEHOLDER = /\{(\w+)\}/g;

/** The template of `key` in the first table that has it, else the key itself. */
function template(tables, key) {
  for (const table of tables) {
    if (table && Object.prototype.hasOwnProperty.call(table, key)) return table[key];
  }
  return key;
}

/** A variable as text: a nested message, a joined list or a plain value. */
function text(tables, value) {
  if (value && typeof value === "object") {
    if (Array.isArray(value.join)) {
      return value.join.map((item) => text(tables, item)).join(template(tables, value.sep || "sep.list"));
    }
    if (typeof value.key === "string") return fill(tables, value.key, value.vars);
  }
  return String(value);
}

/** The template of `key` with its {name} placeholders filled in (a name without a value stays as written). */
export function fill(tables, key, vars) {
  const values = vars || {};
  return template(tables, key).replace(PLACEHOLDER, (m, name) => (name in values ? text(tables, values[name]) : m));
}

/** A message ({key, vars}) or a plain text, as text. */
export function render(tables, message) {
  return text(tables, message ?? "");
}
