// The coffer file format (docs/FORMAT.md), streaming decoder for the browser.
//
// This is a third implementation of the spec (after crates/coffer-format and
// tools/pydecode), so it follows §11.1 step by step and names the section of
// each rule. It is checked against the same vectors (testdata/v1, testdata/v2)
// by web/test/vectors.test.mjs.
//
// Invariant the caller relies on: `decrypt` yields plaintext in order and
// yields the *final* chunk only after the sender's signature over
// (header_hash, plaintext_len, n, root) verified (§10 "Released chunks"). Any
// failure throws a CofferError whose `kind` is one of the classes of §11.2;
// whoever consumes the output must then discard everything it received.
//
// Primitives: AES-256-GCM and SHA-256 through WebCrypto; HPKE through
// @hpke/core (X25519) and @hpke/hybridkem-x-wing; BLAKE3 (derive-key mode,
// which WebCrypto lacks) and strict Ed25519 (ZIP-215 off, as dalek's
// verify_strict) through @noble. Nothing here implements a primitive.

import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { XWing } from "@hpke/hybridkem-x-wing";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { blake3 } from "@noble/hashes/blake3.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { CofferError } from "./errors.js";
import { parseMetadata } from "./metadata.js";

export { CofferError };
import { concat, utf8, be64, equal } from "./bytes.js";

export const MAGIC = Uint8Array.from([0x89, 0x43, 0x4f, 0x46, 0x46, 0x45, 0x52, 0x0a]);
const TAG = 16;
const MAC_LEN = 32;
const SIGNATURE_LEN = 64;
const V1_TRAILER_LEN = 120;
const MAX_STANZAS = 256;
const MAX_STANZA_BODY = 4096;
const P25519 = (1n << 255n) - 19n;

const subtle = globalThis.crypto.subtle;
const LEAF_CONTEXT = utf8("coffer v2 chunk leaf");
const NODE_CONTEXT = utf8("coffer v2 tree node");

// --- §5 keys -------------------------------------------------------------------

async function hmacSha256(key, data) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}

/** HKDF-Expand (RFC 5869) of one block: all our outputs are 32 bytes. */
async function hkdfExpand32(prk, info) {
  return hmacSha256(prk, concat(info, Uint8Array.of(1)));
}

/** §5.1 (and appendix A's labels for version 1). */
export async function deriveKeys(version, fileKey, salt) {
  const prk = await hmacSha256(salt, fileKey);
  const label = (name) => utf8(`coffer/v${version}/${name}`);
  const keys = {
    payload: await hkdfExpand32(prk, label("payload")),
    metadata: await hkdfExpand32(prk, label("metadata")),
    headerMac: await hkdfExpand32(prk, label("header-mac")),
  };
  if (version === 1) keys.trailer = await hkdfExpand32(prk, label("trailer"));
  return keys;
}

async function aesKey(raw) {
  return subtle.importKey("raw", raw, "AES-GCM", false, ["decrypt", "encrypt"]);
}

async function aesOpen(key, nonce, sealed, aad = new Uint8Array(0)) {
  try {
    return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, key, sealed));
  } catch {
    return null;
  }
}

/** §6.1: BE88(i) || flag. */
export function chunkNonce(index, final) {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(3, BigInt(index));
  nonce[11] = final ? 1 : 0;
  return nonce;
}

// --- §9.1, §9.2 keys and fingerprints --------------------------------------------

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** §9.1 from the 96-byte sender field (or a version 1 sender of 64 bytes). */
export function fingerprint(senderField) {
  const ed = senderField.subarray(0, 32);
  const x = senderField.subarray(32, 64);
  const pq = senderField.subarray(64, 96);
  const classic = pq.length === 0 || pq.every((b) => b === 0);
  const digest = classic
    ? sha256(concat(utf8("coffer/v1/fingerprint"), ed, x))
    : sha256(concat(utf8("coffer/v2/fingerprint"), ed, x, pq));
  let bits = 0n;
  for (const b of digest.subarray(0, 10)) bits = (bits << 8n) | BigInt(b);
  let text = "";
  for (let i = 0; i < 16; i++) text += CROCKFORD[Number((bits >> BigInt(75 - 5 * i)) & 31n)];
  return text.match(/.{4}/g).join("-");
}

function ed25519Canonical(key) {
  try {
    const point = ed25519.Point.fromBytes(key, false);
    return !point.isSmallOrder() && equal(point.toBytes(), key);
  } catch {
    return false;
  }
}

function x25519Canonical(key) {
  let u = 0n;
  for (let i = 31; i >= 0; i--) u = (u << 8n) | BigInt(key[i]);
  if (u >= P25519) return false;
  try {
    const shared = x25519.getSharedSecret(x25519.utils.randomSecretKey(), key);
    return !shared.every((b) => b === 0);
  } catch {
    return false;
  }
}

/** §5.3 key ids of a recipient's secret keys. */
export async function recipientKeys({ x25519Secret, xwingSeed }) {
  const xPublic = x25519.getPublicKey(x25519Secret);
  const out = {
    classic: {
      keyId: sha256(concat(utf8("coffer/v1/key-id"), xPublic)).subarray(0, 8),
      secret: x25519Secret,
    },
  };
  if (xwingSeed) {
    const pair = await new XWing().generateKeyPairDerand(xwingSeed.slice());
    const pk = new Uint8Array(await new XWing().serializePublicKey(pair.publicKey));
    out.hybrid = { keyId: sha256(concat(utf8("coffer/v2/key-id/x-wing"), pk)).subarray(0, 8), secret: pair.privateKey };
  }
  return out;
}

// --- §4 header and §5.3 stanzas --------------------------------------------------

/** Reads exactly what it is asked for from an async byte source, or less at the end. */
export class Input {
  constructor(source) {
    this.source = source; // async iterator of Uint8Array
    this.parts = [];
    this.length = 0;
    this.ended = false;
    this.consumed = 0;
  }

  /** Buffers until at least `n` bytes are held or the input ends; returns what is held. */
  async fill(n) {
    while (this.length < n && !this.ended) {
      const next = await this.source.next();
      if (next.done) this.ended = true;
      else if (next.value.length) {
        this.parts.push(next.value);
        this.length += next.value.length;
      }
    }
    return this.length;
  }

  /** The first `n` held bytes, removed (n ≤ length). */
  take(n) {
    const out = this.peek(n);
    let left = n;
    while (left > 0) {
      const head = this.parts[0];
      if (head.length <= left) {
        this.parts.shift();
        left -= head.length;
      } else {
        this.parts[0] = head.subarray(left);
        left = 0;
      }
    }
    this.length -= n;
    this.consumed += n;
    return out;
  }

  peek(n) {
    if (this.parts.length && this.parts[0].length >= n) return this.parts[0].subarray(0, n);
    const out = new Uint8Array(n);
    let at = 0;
    for (const part of this.parts) {
      if (at >= n) break;
      const piece = part.subarray(0, n - at);
      out.set(piece, at);
      at += piece.length;
    }
    return out;
  }
}

async function need(input, n, what) {
  if ((await input.fill(n)) < n) throw new CofferError("truncated", what);
}

function be(bytes, offset, size) {
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, size);
  return size === 2 ? view.getUint16(0) : view.getUint32(0);
}

/** §4.2 in its order, then §5.3's stanza section. Consumes the header from `input`. */
export async function readHeader(input) {
  if ((await input.fill(8)) < 8 || !equal(input.peek(8), MAGIC)) {
    throw new CofferError("not-coffer", "no coffer magic");
  }
  await need(input, 10, "header");
  const version = be(input.peek(10), 8, 2);
  if (version !== 1 && version !== 2) throw new CofferError("unsupported", `version ${version}`);
  const fixedLen = version === 2 ? 164 : 116;
  await need(input, fixedLen, "header");
  const fixed = input.peek(fixedLen);
  const suite = be(fixed, 10, 2);
  if (suite !== 1) throw new CofferError("unsupported", `suite ${suite}`);
  const chunkSize = be(fixed, 12, 4);
  if (chunkSize < 256 || chunkSize > 16 * 1024 * 1024) throw new CofferError("malformed", "chunk size");
  const fileId = version === 2 ? fixed.slice(16, 32) : new Uint8Array(16);
  const salt = version === 2 ? fixed.slice(32, 64) : fixed.slice(16, 48);
  const sender = version === 2 ? fixed.slice(64, 160) : fixed.slice(48, 112);
  if (!ed25519Canonical(sender.subarray(0, 32))) throw new CofferError("malformed", "sender Ed25519 key");
  if (!x25519Canonical(sender.subarray(32, 64))) throw new CofferError("malformed", "sender X25519 key");
  const metadataLen = be(fixed, fixedLen - 4, 4);
  if (metadataLen < 16 || metadataLen > 65552) throw new CofferError("malformed", "metadata length");
  const coreLen = fixedLen + metadataLen + MAC_LEN;
  await need(input, coreLen + 2, "header");
  const core = input.take(coreLen);
  const count = be(input.take(2), 0, 2);
  if (count > MAX_STANZAS) throw new CofferError("malformed", "stanza count");
  const stanzas = [];
  for (let i = 0; i < count; i++) stanzas.push(await readStanza(input, version));
  return {
    version,
    chunkSize,
    fileId,
    salt,
    sender,
    fixed,
    metadataCt: core.slice(fixedLen, fixedLen + metadataLen),
    macInput: core.subarray(0, fixedLen + metadataLen),
    mac: core.slice(fixedLen + metadataLen),
    headerHash: new Uint8Array(await subtle.digest("SHA-256", core)),
    headerLen: input.consumed,
    stanzas,
  };
}

async function readStanza(input, version) {
  if (version === 1) {
    await need(input, 89, "stanza");
    const raw = input.take(89);
    if (raw[0] !== 1) throw new CofferError("malformed", "version 1 stanza type");
    return { type: 1, body: raw.subarray(1) };
  }
  await need(input, 3, "stanza");
  const head = input.take(3);
  const length = be(head, 1, 2);
  if (length > MAX_STANZA_BODY) throw new CofferError("malformed", "stanza body length");
  await need(input, length, "stanza");
  return stanzaBody(head[0], input.take(length));
}

function stanzaBody(type, body) {
  const known = { 1: 88, 2: 1176 };
  if (known[type] !== undefined && known[type] !== body.length) {
    throw new CofferError("malformed", `type ${type} stanza of ${body.length} bytes`);
  }
  return { type, body };
}

/** A detached stanza's wire form (§5.3; a version 1 stanza is its 89 bytes). */
export function parseDetached(wire) {
  if (wire.length === 89 && wire[0] === 1) return { type: 1, body: wire.subarray(1) };
  if (wire.length < 3 || wire.length !== 3 + be(wire, 1, 2)) {
    throw new CofferError("malformed", "detached stanza");
  }
  return stanzaBody(wire[0], wire.subarray(3));
}

function suiteFor(type) {
  const kem = type === 1 ? new DhkemX25519HkdfSha256() : new XWing();
  return new CipherSuite({ kem, kdf: new HkdfSha256(), aead: new Aes256Gcm() });
}

/** §5.3 "Opening": every candidate in order until one passes the header MAC. */
export async function openHeader(header, recipient, detached = []) {
  const mine = { 1: recipient.classic, 2: header.version === 2 ? recipient.hybrid : undefined };
  const candidates = [...header.stanzas, ...detached].filter(
    (s) => mine[s.type] && equal(s.body.subarray(0, 8), mine[s.type].keyId),
  );
  const info = utf8(`coffer/v${header.version}/file-key`);
  for (const stanza of candidates) {
    const key = await tryStanza(stanza, mine[stanza.type], concat(info, header.headerHash, stanza.body.subarray(0, 8)));
    if (!key || key.length !== 32) continue;
    const keys = await deriveKeys(header.version, key, header.salt);
    const mac = await hmacSha256(keys.headerMac, header.macInput);
    if (constantTimeEqual(mac, header.mac)) return keys;
  }
  throw new CofferError(candidates.length ? "tampered" : "wrong-key", "no stanza opened");
}

async function tryStanza(stanza, mine, info) {
  const encLen = stanza.type === 1 ? 32 : 1120;
  const suite = suiteFor(stanza.type);
  try {
    const recipientKey =
      stanza.type === 1 ? await suite.kem.importKey("raw", mine.secret.slice(), false) : mine.secret;
    const enc = stanza.body.slice(8, 8 + encLen);
    const wrapped = stanza.body.slice(8 + encLen);
    return new Uint8Array(await suite.open({ recipientKey, enc: enc.buffer, info: info.buffer }, wrapped.buffer));
  } catch {
    return null;
  }
}

/** HMAC outputs are compared without an early exit (§5.2 asks constant time). */
function constantTimeEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

// --- §6.2 the content tree ---------------------------------------------------------

export function leaf(index, sealed) {
  return blake3.create({ context: LEAF_CONTEXT }).update(be64(index)).update(sealed).digest();
}

export function node(left, right) {
  return blake3(concat(left, right), { context: NODE_CONTEXT });
}

/** Keeps the roots of the complete subtrees so far (O(log n)), as a writer does. */
export class Tree {
  constructor() {
    this.stack = []; // [{size, root}], sizes strictly decreasing
  }

  /** Adds leaf i; returns entries_i = leaf_i || the roots it completes (§6.2). */
  push(leafHash) {
    const entries = [leafHash];
    let top = { size: 1, root: leafHash };
    while (this.stack.length && this.stack[this.stack.length - 1].size === top.size) {
      const left = this.stack.pop();
      top = { size: left.size * 2, root: node(left.root, top.root) };
      entries.push(top.root);
    }
    this.stack.push(top);
    return concat(...entries);
  }

  root() {
    let root = this.stack[this.stack.length - 1].root;
    for (let k = this.stack.length - 2; k >= 0; k--) root = node(this.stack[k].root, root);
    return root;
  }
}

function ctz(x) {
  let n = 0;
  while ((x & 1) === 0) {
    x >>>= 1;
    n++;
  }
  return n;
}

// --- §11.1 streaming decryption -----------------------------------------------------

/**
 * Decrypts a coffer file read from `source` (an async iterator of
 * Uint8Array). Yields `{metadata, sender, fingerprint, fileId, size}` once,
 * then plaintext Uint8Arrays; the last one only after every check of §11.1
 * step 5 passed. Returns `{root, chunkCount, plaintextLen}`.
 */
export async function* decrypt(source, recipient, { detached = [] } = {}) {
  const input = new Input(source);
  const header = await readHeader(input);
  const keys = await openHeader(header, recipient, detached);
  const metadataPlain = await aesOpen(await aesKey(keys.metadata), new Uint8Array(12), header.metadataCt, header.fixed);
  if (!metadataPlain) throw new CofferError("tampered", "metadata");
  const metadata = parseMetadata(metadataPlain);
  yield {
    metadata,
    version: header.version,
    sender: header.sender,
    fingerprint: fingerprint(header.sender),
    fileId: header.fileId,
  };
  const v2 = header.version === 2;
  const S = header.chunkSize + TAG;
  const T = v2 ? SIGNATURE_LEN : V1_TRAILER_LEN;
  const payload = await aesKey(keys.payload);
  const tree = new Tree();
  const plainHash = v2 ? null : sha256.create();
  let plaintextLen = 0;
  for (let i = 0; ; i++) {
    const E = v2 ? 32 * (1 + ctz(i + 1)) : 0;
    const held = await input.fill(S + E + T + 1);
    if (held > S + E + T) {
      const sealed = input.take(S);
      if (v2 && !equal(input.take(E), tree.push(leaf(i, sealed)))) {
        throw new CofferError("tampered", `entries of chunk ${i}`);
      }
      const plain = await aesOpen(payload, chunkNonce(i, false), sealed);
      if (!plain) throw new CofferError("tampered", `chunk ${i}`);
      plainHash?.update(plain);
      plaintextLen += plain.length;
      yield plain;
      continue;
    }
    if (held < TAG + E + T) throw new CofferError("truncated", "payload or signature missing");
    const rest = input.take(held);
    const F = held - E - T;
    const sealed = rest.subarray(0, F);
    const plain = await aesOpen(payload, chunkNonce(i, true), sealed);
    if (!plain) throw await finalChunkFailure(payload, rest, i, S, E);
    if (v2 && !equal(rest.subarray(F, F + E), tree.push(leaf(i, sealed)))) {
      throw new CofferError("tampered", "entries of the final chunk");
    }
    if (plain.length === 0 && i > 0) throw new CofferError("malformed", "empty final chunk");
    plaintextLen += plain.length;
    plainHash?.update(plain);
    const trailer = rest.subarray(held - T);
    const checked = v2
      ? verifyV2(header, trailer, plaintextLen, i + 1, tree.root())
      : await verifyV1(header, keys, trailer, plaintextLen, plainHash.digest());
    if (metadata.size !== undefined && metadata.size !== plaintextLen) {
      throw new CofferError("malformed", "metadata size differs from the signed length");
    }
    yield plain;
    return { ...checked, chunkCount: i + 1, plaintextLen };
  }
}

/** §7.2: a cut after a complete chunk is "truncated"; anything else "tampered". */
async function finalChunkFailure(payload, rest, i, S, E) {
  for (const length of [Math.min(rest.length, S), rest.length - E]) {
    for (const flag of [false, true]) {
      if (length >= TAG && (await aesOpen(payload, chunkNonce(i, flag), rest.subarray(0, length)))) {
        return new CofferError("truncated", "the file ends after a complete chunk");
      }
    }
  }
  return new CofferError("tampered", "final chunk");
}

function verifyV2(header, signature, plaintextLen, chunkCount, root) {
  const message = concat(utf8("coffer/v2/signature"), header.headerHash, be64(plaintextLen), be64(chunkCount), root);
  if (!verifyStrict(signature, message, header.sender.subarray(0, 32))) {
    throw new CofferError("tampered", "signature");
  }
  return { root };
}

async function verifyV1(header, keys, trailer, plaintextLen, digest) {
  const opened = await aesOpen(await aesKey(keys.trailer), new Uint8Array(12), trailer, header.headerHash);
  if (!opened) throw new CofferError("tampered", "trailer");
  const length = opened.subarray(0, 8);
  if (!equal(length, be64(plaintextLen)) || !equal(opened.subarray(8, 40), digest)) {
    throw new CofferError("tampered", "trailer does not match the content");
  }
  const message = concat(utf8("coffer/v1/signature"), header.headerHash, length, digest);
  if (!verifyStrict(opened.subarray(40, 104), message, header.sender.subarray(0, 32))) {
    throw new CofferError("tampered", "signature");
  }
  return { plaintextSha256: digest };
}

function verifyStrict(signature, message, publicKey) {
  try {
    return ed25519.verify(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
}
