// The translation table (zh-CN and en) embedded by the page; the choice is remembered in localStorage and a cookie.
import { fill, render } from "./messages.js";

const LANGS = ["zh-CN", "en"];
const STORAGE_KEY = "studio_lang";
const table = JSON.parse(document.getElementById("i18n-table").textContent);
let lang = initialLanguage();

function initialLanguage() {
  let saved = null;
  try { saved = localStorage.getItem(STORAGE_KEY); } catch (e) { /* storage may be disabled */ }
  if (LANGS.includes(saved)) return saved;
  const page = document.documentElement.lang;
  return LANGS.includes(page) ? page : LANGS[0];
}

export function currentLanguage() { return lang; }

/** The string for `key` in the current language with {name} placeholders filled in (a value may be a message). */
export function t(key, vars = {}) {
  return fill([table[lang], table.en], key, vars);
}

/** A server message ({key, vars}) or plain text in the current language. */
export function tm(message) {
  return render([table[lang], table.en], message);
}

/** A text the server sent (`X`) in the current language: from its structured form (`X_i18n`) when given. */
export function localText(text, i18n) {
  return i18n ? tm(i18n) : (text ?? "");
}

export function hasKey(key) { return Boolean(table[lang] && key in table[lang]); }

/** Switch the language, remember it, and retranslate the static parts of the page. */
export function setLanguage(next) {
  if (!LANGS.includes(next)) return;
  lang = next;
  try { localStorage.setItem(STORAGE_KEY, next); } catch (e) { /* storage may be disabled */ }
  document.cookie = `${STORAGE_KEY}=${encodeURIComponent(next)}; path=/; max-age=31536000; SameSite=Strict`;
  applyTranslations(document);
}

/** Fill every element marked with data-i18n (text), data-i18n-title and data-i18n-placeholder. */
export function applyTranslations(root) {
  document.documentElement.lang = lang;
  document.title = t("app.title");
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
}
