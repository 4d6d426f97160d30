// Unsaved form edits kept in localStorage, so a reload (even mid-run) loses nothing.
const KEY = "studio_draft";

export function saveDraft(draft) {
  try { localStorage.setItem(KEY, JSON.stringify({ ...draft, at: Date.now() })); } catch (e) { /* storage full or off */ }
}

export function loadDraft() {
  try {
    const raw = localStorage.getItem(KEY);
    const draft = raw ? JSON.parse(raw) : null;
    return draft && typeof draft.values === "object" ? draft : null;
  } catch (e) {
    return null;
  }
}
