// The link page: opens a coffer share link and decrypts the file in the page.
//
// The URL is https://HOST/v1/links/<id>#k=<secret>&s=<sender fingerprint>.
// The fragment never leaves the browser. From the secret (and the password,
// when the link has one) the page derives the link key; the server only ever
// sees an access proof and a password verifier (link-keys.js). The server
// hands over a wrap of the file key and a ticket for the ciphertext; the page
// decrypts and verifies it as it streams (format.js) and writes it through a
// sink (sinks.js). Every name and size shown comes from the decrypted,
// authenticated file, never from the server.

import { decrypt, parseDetached, recipientKeys, CofferError } from "./format.js";
import { accessProof, linkSecret, passwordKey, serverValue, SALT_LEN, SECRET_LEN } from "./link-keys.js";
import { fromB64url } from "./bytes.js";
import { BLOB_LIMIT, blobSink, downloadWorker, pickedFileSink, safeName, workerSink } from "./sinks.js";
import { el, fail, formatSize, show } from "./ui.js";

const RETRIES = 5;

const SERVER_MESSAGES = {
  link_expired: "This link has expired. Ask the sender for a new one.",
  link_exhausted: "This link has been used as many times as the sender allowed. Ask the sender for a new one.",
  link_locked: "This link is locked after too many wrong passwords. Ask the sender for a new one.",
  wrong_password: "That password is not right. Try again (the link locks after a few wrong tries).",
  password_required: "This link needs a password.",
  not_found: "There is no such link. It may have been revoked, or the address was copied incompletely.",
  rate_limited: "The server is busy. Wait a minute and reload the page.",
};

const FORMAT_MESSAGES = {
  tampered: "The file failed its integrity check: it was changed after the sender encrypted it. Nothing was saved.",
  truncated: "The file on the server is incomplete. Nothing was saved.",
  malformed: "The file on the server is damaged. Nothing was saved.",
  "wrong-key": "This link's key does not open the file (the link is broken or the server changed it).",
  "not-coffer": "The server did not return a coffer file.",
  unsupported: "This file was made by a newer coffer version than this page knows.",
};

class ServerError extends Error {
  constructor(status, code, message) {
    super(SERVER_MESSAGES[code] ?? `The server refused: ${message ?? status}`);
    this.code = code;
  }
}

function parseFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const secret = fromB64url(params.get("k") ?? "");
  const id = /^\/v1\/links\/([A-Za-z0-9_-]+)$/.exec(location.pathname)?.[1];
  if (!id || !secret || secret.length !== SECRET_LEN) return null;
  const sender = params.get("s")?.toUpperCase();
  return { id, secret, sender: sender && /^[0-9A-Z]{16}$/.test(sender) ? sender : null };
}

async function api(path, { access, ticket, method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (access) headers["Coffer-Link-Access"] = access;
  if (ticket) headers["Coffer-Link-Ticket"] = ticket;
  if (body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body && JSON.stringify(body), cache: "no-store" });
  if (!response.ok) {
    const error = await response.json().catch(() => ({}));
    throw new ServerError(response.status, error?.error?.code, error?.error?.message);
  }
  return response.json();
}

/**
 * The ciphertext as an async iterator of Uint8Array. A dropped connection is
 * resumed with a Range request from the byte reached, while the ticket lasts;
 * the decoder never notices.
 */
async function* ciphertext(link, ticket, total, onBytes) {
  let received = 0;
  for (let attempt = 0; received < total; attempt++) {
    if (attempt > RETRIES) throw new Error("the download kept breaking off; reload the page to try again");
    let response;
    try {
      const headers = { "Coffer-Link-Ticket": ticket };
      if (received) {
        headers.Range = `bytes=${received}-`;
        // Visible to tests and to a curious user's inspector: where the
        // last resumption started.
        document.body.dataset.resumedFrom = String(received);
      }
      response = await fetch(`/v1/links/${link}/content`, { headers, cache: "no-store" });
    } catch (err) {
      if (attempt >= RETRIES) throw new Error(`the connection to the server failed: ${err.message}`);
      await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
      continue;
    }
    if (!response.ok) throw new ServerError(response.status, (await response.json().catch(() => ({})))?.error?.code);
    if (received && response.status !== 206) throw new Error("the server cannot resume this download");
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        received += value.length;
        onBytes(received);
        yield value;
      }
    } catch (err) {
      if (attempt >= RETRIES) throw new Error(`the download broke off: ${err.message}`);
    }
  }
}

async function start() {
  const link = parseFragment();
  if (!link) return fail("This link address is incomplete: the part after # is missing or damaged. Copy the whole link again.");
  const access = await accessProof(link.secret);
  const info = await api(`/v1/links/${link.id}`, { access });
  el("size").textContent = formatSize(info.size);
  el("expires").textContent = new Date(info.expires_at * 1000).toLocaleString();
  el("downloads-left").textContent = info.downloads_left ?? "no limit";
  const salt = fromB64url(info.client_salt ?? "");
  if (!salt || salt.length !== SALT_LEN) throw new Error("the server sent a damaged link salt");
  show(info.password_required ? "password" : "ready");
  const form = el(info.password_required ? "password-form" : "open-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const password = info.password_required ? el("password").value : null;
    open(link, access, salt, password, info.size).catch(report);
  });
}

async function open(link, access, salt, password, objectSize) {
  show("opening");
  let pwKey = null;
  let verifier;
  if (password !== null) {
    el("status").textContent = "Checking the password (this takes a few seconds)…";
    pwKey = await passwordKey(password, salt, (p) => (el("status").textContent = `Checking the password… ${Math.round(p * 100)}%`));
    verifier = await serverValue(pwKey, salt);
  }
  let opened;
  try {
    opened = await api(`/v1/links/${link.id}/open`, { access, method: "POST", body: verifier ? { password: verifier } : {} });
  } catch (err) {
    if (err.code === "wrong_password") {
      show("password");
      el("password-error").textContent = err.message;
      return;
    }
    throw err;
  }
  const recipient = await recipientKeys(await linkSecret(link.secret, salt, pwKey));
  const stanza = parseDetached(fromB64url(opened.stanza) ?? new Uint8Array(0));
  await receive(link, opened, objectSize, recipient, stanza);
}

async function receive(link, opened, objectSize, recipient, stanza) {
  const started = performance.now();
  const progress = (bytes) => {
    el("progress").value = bytes / objectSize;
    const rate = bytes / 1e6 / ((performance.now() - started) / 1000);
    el("status").textContent = `${formatSize(bytes)} of ${formatSize(objectSize)} (${rate.toFixed(0)} MB/s)`;
  };
  const plaintext = decrypt(ciphertext(link.id, opened.ticket, objectSize, progress), recipient, { detached: [stanza] });
  const header = (await plaintext.next()).value;
  if (link.sender && header.fingerprint.replace(/-/g, "") !== link.sender) {
    throw new CofferError("tampered", "the file is not from the sender this link names");
  }
  const name = safeName(header.metadata.name);
  el("name").textContent = name;
  el("sender").textContent = header.fingerprint;
  el("sender-check").textContent = link.sender ? "matches the sender named in this link" : "the link names no sender to compare";
  show("receiving");
  const sink = await chooseSink(name, header.metadata.size ?? objectSize);
  el("mode").textContent = {
    stream: "Saving straight to your downloads folder as it decrypts.",
    file: "Saving to the file you chose as it decrypts.",
    memory: "Decrypting in the page; the download starts when the whole file is verified.",
  }[sink.kind];
  try {
    for (;;) {
      const step = await plaintext.next();
      if (step.done) break;
      await sink.write(step.value);
    }
    await sink.close();
  } catch (err) {
    sink.abort(err.message);
    throw err;
  }
  show("done");
  el("done-text").textContent = `${name} was decrypted and verified: it is exactly what the sender (${header.fingerprint}) encrypted.`;
}

async function chooseSink(name, size) {
  const worker = await downloadWorker();
  if (worker) return workerSink(name, size);
  if (size <= BLOB_LIMIT) return blobSink(name);
  if (typeof window.showSaveFilePicker === "function") {
    show("pick");
    await new Promise((resolve) => el("pick-button").addEventListener("click", resolve, { once: true }));
    return pickedFileSink(name);
  }
  throw new Error(
    `This file is ${formatSize(size)}. This browser can only save files that large while decrypting them when the server has a certificate it trusts, and this server's certificate is self-signed. Use the coffer command-line tool, or ask the sender to give the server a trusted certificate.`,
  );
}

function report(err) {
  if (err instanceof CofferError) fail(FORMAT_MESSAGES[err.kind] ?? err.message, err.kind);
  else fail(err.message, err.code);
}

start().catch(report);
