// Where the plaintext goes. Each sink has write(chunk), close() and
// abort(reason); nothing it produces looks complete unless close() ran,
// which the page calls only after the decoder verified the signature.
//
// 1. The service worker (sw.js): a real streaming download to disk, with
//    constant memory. Browsers allow it only on a server whose certificate
//    they trust (not behind a self-signed one, even after a click-through).
// 2. The File System Access API (desktop Chromium): writes to a file the
//    user picks; the browser keeps it in a temporary file until close().
// 3. A Blob, for small files only (BLOB_LIMIT): the whole file in memory.

export const BLOB_LIMIT = 64 * 1024 * 1024;

/** The service worker's registration, or null where the browser refuses one. */
export async function downloadWorker() {
  if (!("serviceWorker" in navigator) || !window.isSecureContext) return null;
  try {
    // Not navigator.serviceWorker.ready: that waits for a worker whose scope
    // covers this page, and the worker's scope is /assets/ only.
    const registration = await navigator.serviceWorker.register("/assets/sw.js", { scope: "/assets/" });
    const worker = registration.active ?? registration.waiting ?? registration.installing;
    const activated = new Promise((resolve) => {
      if (worker.state === "activated") resolve(true);
      worker.addEventListener("statechange", () => worker.state === "activated" && resolve(true));
      setTimeout(() => resolve(false), 10_000);
    });
    return (await activated) ? registration : null;
  } catch {
    return null;
  }
}

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(18));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
}

/** Streams through the worker (sw.js) into a download the browser saves as `name`. */
export async function workerSink(name, size) {
  const id = randomId();
  const channel = new BroadcastChannel(`coffer-dl-${id}`);
  let pulls = 0;
  let cancelled = false;
  let wake = null;
  channel.onmessage = (event) => {
    if (event.data.cancelled) cancelled = true;
    pulls++;
    wake?.();
  };
  const frame = document.createElement("iframe");
  frame.hidden = true;
  frame.src = `/assets/dl/${id}/${encodeURIComponent(name)}?size=${size}`;
  document.body.append(frame);
  const nextPull = async () => {
    while (!pulls) await new Promise((resolve) => (wake = resolve));
    pulls--;
    if (cancelled) throw new Error("the download was cancelled in the browser");
  };
  return {
    kind: "stream",
    async write(chunk) {
      await nextPull();
      channel.postMessage({ chunk });
    },
    async close() {
      await nextPull();
      channel.postMessage({ done: true });
      channel.close();
    },
    abort(reason) {
      channel.postMessage({ error: String(reason) });
      channel.close();
    },
  };
}

/** Writes to a file the user picks (must be called from a click). */
export async function pickedFileSink(name) {
  const handle = await window.showSaveFilePicker({ suggestedName: name });
  const writable = await handle.createWritable();
  return {
    kind: "file",
    write: (chunk) => writable.write(chunk),
    close: () => writable.close(),
    abort: (reason) => writable.abort(String(reason)),
  };
}

/** Holds the file in memory and offers it only when complete. */
export function blobSink(name) {
  const parts = [];
  return {
    kind: "memory",
    async write(chunk) {
      parts.push(chunk);
    },
    async close() {
      const url = URL.createObjectURL(new Blob(parts, { type: "application/octet-stream" }));
      parts.length = 0;
      const a = document.createElement("a");
      a.href = url;
      a.download = name;
      document.body.append(a);
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    },
    abort() {
      parts.length = 0;
    },
  };
}

const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;

/** A file name the browser may save: one component, no controls or bidi tricks. */
export function safeName(untrusted) {
  const last = String(untrusted ?? "").split(/[\\/]/).pop().replace(UNSAFE, "").trim();
  const name = last.replace(/^\.+/, "").slice(0, 200);
  return name || "download";
}
