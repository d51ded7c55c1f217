// The upload-link page: lets anyone holding a `coffer request` URL send files
// to the link's owner, encrypted in this page to the owner's key.
//
// The URL is https://HOST/v1/requests/<id>#k=<secret>&r=<pin>[&n=<note>]
// (crates/coffer-proto/src/request.rs). The fragment never leaves the
// browser. The page proves to the server that it holds the URL (an access
// proof derived from the secret), fetches the owner's public identity and
// refuses it unless it matches the pin in the fragment: a server that
// offered its own key would otherwise read every file. A link with a
// password asks for it first; the page sends a value derived from it and
// the URL secret (never the password itself) to see the link and to begin
// each upload. Each file is then
// encrypted here (encrypt.js, coffer format v2, signed with a one-time key)
// and sent through the server's tus endpoint, in requests of a few MiB.
//
// Resuming: the keys and header of a file being sent are kept in this
// browser's localStorage (under the link id and the file's name, size and
// modification time) until the server has the last byte. After a dropped
// connection the page asks the server for its offset and goes on; after a
// reload, choosing the same file again does the same. Those stored keys
// only open the one file this browser is sending; they are removed when it
// arrives.

import { CofferError } from "./errors.js";
import { objectBytes, prepare, recipientOf } from "./encrypt.js";
import { b64url, concat, fromB64url, utf8 } from "./bytes.js";
import { accessProof, passwordProof, pinOf } from "./request-keys.js";
import { el, fail, formatSize, show } from "./ui.js";

const PATCH_BYTES = 4 * 1024 * 1024;
const RETRIES = 8;
const STORE_PREFIX = "coffer-upload:";

const SERVER_MESSAGES = {
  request_expired: "This upload link has expired. Ask for a new one.",
  request_exhausted: "This upload link takes no more files. Ask for a new one.",
  request_revoked: "This upload link is no longer available.",
  request_locked: "This upload link is locked after too many wrong passwords. Ask for a new one.",
  wrong_password: "That password is not right. Try again (the link locks after a few wrong tries).",
  not_found: "There is no such upload link. It may have been revoked, or the address was copied incompletely.",
  too_large: "This file is larger than this upload link accepts.",
  quota_exceeded: "The person you are sending to has no room left for this file. Tell them.",
  too_many_uploads: "Too many unfinished uploads for this person right now. Try again later.",
  rate_limited: "Too many uploads from your address right now. Wait a few minutes and try again.",
  invalid_object: "The server refused the encrypted file (it may have changed while it was sent). Choose it again to send it anew.",
};

class ServerError extends Error {
  constructor(status, code, message) {
    super(SERVER_MESSAGES[code] ?? `The server refused: ${message ?? status}`);
    this.status = status;
    this.code = code;
  }
}

function parseFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const secret = fromB64url(params.get("k") ?? "");
  const pin = params.get("r") ?? "";
  const id = /^\/v1\/requests\/([A-Za-z0-9]+)$/.exec(location.pathname)?.[1];
  if (!id || !secret || secret.length !== 32 || fromB64url(pin)?.length !== 32) return null;
  return { id, secret, pin, note: params.get("n") ?? "" };
}

async function refusal(response) {
  const body = await response.json().catch(() => ({}));
  return new ServerError(response.status, body?.error?.code, body?.error?.message);
}

/** One tus request with the link's credentials. */
function tus(link, path, { method, headers = {}, body } = {}) {
  return fetch(path, {
    method,
    body,
    cache: "no-store",
    headers: { "Tus-Resumable": "1.0.0", "Coffer-Request": link.id, "Coffer-Request-Access": link.access, ...headers },
  });
}

function stdB64(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

// --- what a reload needs to go on ------------------------------------------------

const BYTE_FIELDS = ["fileKey", "signingSeed", "headerHash", "header", "stanza"];

function storeKey(link, file) {
  return `${STORE_PREFIX}${link.id}:${file.size}:${file.lastModified}:${file.name}`;
}

function save(link, file, state) {
  const stored = { ...state.prepared };
  for (const field of BYTE_FIELDS) stored[field] = b64url(stored[field]);
  localStorage.setItem(storeKey(link, file), JSON.stringify({ location: state.location, prepared: stored }));
}

function load(link, file) {
  try {
    const stored = JSON.parse(localStorage.getItem(storeKey(link, file)) ?? "null");
    if (!stored) return null;
    for (const field of BYTE_FIELDS) stored.prepared[field] = fromB64url(stored.prepared[field]);
    if (BYTE_FIELDS.some((field) => !stored.prepared[field]) || !/^\/v1\/uploads\/[0-9a-f]{32}$/.test(stored.location)) {
      return null;
    }
    return stored;
  } catch {
    return null;
  }
}

function forget(link, file) {
  localStorage.removeItem(storeKey(link, file));
}

// --- sending one file ---------------------------------------------------------------

/** The server's offset of an upload, or null if it no longer has it. */
async function serverOffset(link, where) {
  const response = await tus(link, where, { method: "HEAD" });
  if (response.status === 404 || response.status === 410) return null;
  if (!response.ok) throw await refusal(response);
  return Number(response.headers.get("upload-offset"));
}

async function begin(link, file, senderName) {
  const metadata = { name: file.name, size: file.size, request: link.id };
  if (file.lastModified) metadata.mtime = Math.floor(file.lastModified / 1000);
  if (file.type) metadata.content_type = file.type;
  if (senderName) metadata.from = senderName;
  const prepared = await prepare(link.recipient, metadata);
  if (link.maxFileBytes != null && prepared.length > link.maxFileBytes) throw new ServerError(413, "too_large");
  const pairs = [
    "coffer-e2ee",
    `coffer-file-id ${stdB64(utf8(prepared.fileId))}`,
    `coffer-wrap.${link.owner} ${stdB64(prepared.stanza)}`,
  ];
  const headers = { "Upload-Length": String(prepared.length), "Upload-Metadata": pairs.join(",") };
  if (link.password) headers["Coffer-Request-Password"] = link.password;
  const response = await tus(link, "/v1/uploads", { method: "POST", headers });
  if (response.status !== 201) throw await refusal(response);
  const state = { prepared, location: new URL(response.headers.get("location"), location.href).pathname };
  save(link, file, state);
  return { ...state, offset: 0 };
}

/** Resumes this browser's upload of `file`, if the server still has it. */
async function resume(link, file) {
  const stored = load(link, file);
  if (!stored) return null;
  const offset = await serverOffset(link, stored.location);
  if (offset === null) {
    forget(link, file);
    return null;
  }
  return { ...stored, offset };
}

/** PATCHes the object from `state.offset` to the end; returns the receipt header. */
async function sendFrom(link, file, state, onSent) {
  const bytes = objectBytes(state.prepared, file, state.offset);
  let offset = state.offset;
  let pending = [];
  let pendingLen = 0;
  for (;;) {
    const next = await bytes.next();
    if (!next.done) {
      pending.push(next.value);
      pendingLen += next.value.length;
      if (pendingLen < PATCH_BYTES) continue;
    }
    if (pendingLen > 0) {
      const response = await tus(link, state.location, {
        method: "PATCH",
        headers: { "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" },
        body: concat(...pending),
      });
      if (response.status !== 204) throw await refusal(response);
      offset = Number(response.headers.get("upload-offset"));
      pending = [];
      pendingLen = 0;
      onSent(offset);
      if (offset === state.prepared.length) {
        const root = next.done ? next.value : (await bytes.next()).value;
        return { receipt: response.headers.get("coffer-receipt"), root };
      }
    }
    if (next.done) throw new Error("the server did not take the whole file");
  }
}

function decodeReceipt(header) {
  try {
    const json = new TextDecoder().decode(fromB64url(header));
    return JSON.parse(json).receipt;
  } catch {
    return null;
  }
}

async function sendFile(link, file, senderName, onSent) {
  let state = (await resume(link, file)) ?? (await begin(link, file, senderName));
  const resumedAt = state.offset;
  for (let attempt = 0; ; attempt++) {
    try {
      const done = await sendFrom(link, file, state, onSent);
      forget(link, file);
      return { ...done, resumedAt, prepared: state.prepared };
    } catch (err) {
      if (err instanceof ServerError && err.status !== 409 && err.status !== 423 && err.status < 500) {
        if (err.code === "invalid_object" || err.status === 404) forget(link, file);
        throw err;
      }
      if (err instanceof CofferError) {
        forget(link, file);
        throw err;
      }
      if (attempt >= RETRIES) throw new Error("the connection kept breaking off; choose the file again to go on");
      await new Promise((resolve) => setTimeout(resolve, Math.min(1000 * 2 ** attempt, 15000)));
      const offset = await serverOffset(link, state.location);
      if (offset === null) throw new ServerError(404, "not_found");
      state = { ...state, offset };
    }
  }
}

// --- the page ---------------------------------------------------------------------------

function row(list, ...cells) {
  const item = document.createElement("li");
  for (const text of cells) {
    const span = document.createElement("span");
    span.textContent = text;
    item.append(span, " ");
  }
  list.append(item);
  return item;
}

async function sendAll(link) {
  const files = Array.from(el("files").files);
  if (!files.length) return;
  const senderName = link.askName ? el("sender-name").value.trim() : "";
  show("sending");
  const total = files.reduce((n, f) => n + f.size, 0);
  let before = 0;
  for (const file of files) {
    el("status").textContent = `Encrypting and sending ${file.name}…`;
    const done = await sendFile(link, file, senderName, (offset) => {
      const share = Math.min(1, offset / Math.max(1, file.size));
      el("progress").value = total ? (before + share * file.size) / total : 1;
      document.body.dataset.sent = String(offset);
    });
    before += file.size;
    const receipt = decodeReceipt(done.receipt);
    const confirmed = receipt?.content === `coffer2-root:${done.root}` && receipt?.file_id === done.prepared.fileId;
    if (done.resumedAt) document.body.dataset.resumed = String(done.resumedAt);
    row(
      el("receipts"),
      file.name,
      formatSize(file.size),
      confirmed ? `received, receipt ${done.prepared.fileId}` : "sent, but the server's receipt does not match what this page sent",
      done.resumedAt ? `(went on from ${formatSize(done.resumedAt)} sent before)` : "",
    );
  }
  el("done-text").textContent = `${files.length} file(s) sent, encrypted for ${link.owner}.`;
  show("done");
}

async function main() {
  const fragment = parseFragment();
  if (!fragment) {
    fail("This upload link is incomplete: part of the address is missing. Copy the whole address, including everything after #.", "bad-url");
    return;
  }
  const access = await accessProof(fragment.secret);
  const first = await fetchInfo(fragment, access, null);
  if (first.error?.code === "password_required") {
    askPassword(fragment, access);
    return;
  }
  if (first.error) {
    fail(first.error.message, first.error.code);
    return;
  }
  await ready(fragment, access, first.info, null);
}

/** The link as the server describes it, or the error it answers with. */
async function fetchInfo(fragment, access, password) {
  const headers = { Accept: "application/json", "Coffer-Request-Access": access };
  if (password) headers["Coffer-Request-Password"] = password;
  const response = await fetch(`/v1/requests/${fragment.id}`, { headers, cache: "no-store" });
  if (!response.ok) return { error: await refusal(response) };
  return { info: await response.json() };
}

function askPassword(fragment, access) {
  show("password");
  el("password-form").addEventListener("submit", (event) => {
    event.preventDefault();
    el("password-button").disabled = true;
    (async () => {
      const password = await passwordProof(fragment.secret, el("password").value);
      const answer = await fetchInfo(fragment, access, password);
      el("password-button").disabled = false;
      if (answer.error?.code === "wrong_password") {
        el("password-error").textContent = answer.error.message;
        document.body.dataset.error = "wrong_password";
        return;
      }
      if (answer.error) {
        fail(answer.error.message, answer.error.code);
        return;
      }
      await ready(fragment, access, answer.info, password);
    })().catch((err) => fail(`Something went wrong: ${err.message}`, "error"));
  });
}

async function ready(fragment, access, info, password) {
  const identity = fromB64url(info.recipient ?? "");
  if (!identity || (await pinOf(identity)) !== fragment.pin) {
    fail("The server offered a key that this link does not name. Nothing was sent. Tell the person who gave you the link.", "wrong-key");
    return;
  }
  const link = {
    id: fragment.id,
    access,
    owner: String(info.owner),
    recipient: await recipientOf(identity),
    maxFileBytes: info.max_file_bytes ?? null,
    askName: Boolean(info.ask_name),
    password,
  };
  el("owner").textContent = link.owner;
  el("fingerprint").textContent = link.recipient.fingerprint;
  el("expires").textContent = new Date(info.expires_at * 1000).toLocaleString();
  el("files-left").textContent = info.files_left == null ? "no limit" : String(info.files_left);
  el("max-size").textContent = link.maxFileBytes == null ? "no limit" : formatSize(link.maxFileBytes);
  el("note").textContent = fragment.note;
  el("note-row").hidden = !fragment.note;
  el("name-row").hidden = !link.askName;
  el("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendAll(link).catch((err) => fail(err.message, err.code ?? err.kind ?? "error"));
  });
  show("ready");
}

main().catch((err) => fail(`Something went wrong: ${err.message}`, "error"));
