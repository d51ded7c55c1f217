// The few DOM helpers the pages share. Text goes in with textContent only:
// names come from files and must never become markup.

export function el(id) {
  return document.getElementById(id);
}

/** Shows the section for `state` (the page's sections carry data-state). */
export function show(state) {
  document.body.dataset.state = state;
  for (const section of document.querySelectorAll("[data-when]")) {
    section.hidden = !section.dataset.when.split(" ").includes(state);
  }
}

/** The error state, with a message for people and a code for tests and support. */
export function fail(message, code) {
  el("error-text").textContent = message;
  document.body.dataset.error = code ?? "error";
  show("error");
}

export function formatSize(bytes) {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}
