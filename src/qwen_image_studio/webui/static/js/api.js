// JSON requests to the studio's API; every state-changing request is JSON (the server refuses anything else).
// Each names the page's language, in which the server words its messages.
import { currentLanguage } from "./i18n.js";

const JSON_HEADERS = { "Content-Type": "application/json", Accept: "application/json" };
const LANG_HEADER = "X-Studio-Lang";

async function answer(response) {
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  return { ok: response.ok, status: response.status, data: data || {} };
}

/** Send a request; the body (if any) goes as JSON. Resolves to {ok, status, data}, never throws. */
export async function api(method, url, body) {
  const headers = { ...JSON_HEADERS, [LANG_HEADER]: currentLanguage() };
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET") init.body = JSON.stringify(body ?? {});
  try {
    return await answer(await fetch(url, init));
  } catch (e) {
    return { ok: false, status: 0, data: { code: "network", error: String(e) } };
  }
}

/** Upload a form (multipart) with the header the server asks of uploads. */
export async function upload(url, formData) {
  try {
    const response = await fetch(url, {
      method: "POST", body: formData, credentials: "same-origin",
      headers: { "X-Studio-Upload": "1", Accept: "application/json", [LANG_HEADER]: currentLanguage() },
    });
    return await answer(response);
  } catch (e) {
    return { ok: false, status: 0, data: { code: "network", error: String(e) } };
  }
}

export function configUrl(name, suffix = "") {
  return `/api/configs/${encodeURIComponent(name)}${suffix}`;
}
