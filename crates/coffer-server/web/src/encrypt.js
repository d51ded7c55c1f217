// The coffer file format (docs/FORMAT.md), version 2 writer for the browser.
//
// The upload-link page encrypts a chosen file to the link owner's public
// identity and streams the object to the server. It writes what the Rust
// writer writes: the core header (§4.1), a stanza section of count 0 (the
// wrap travels detached, §5.3), the chunks with their tree entries (§6) and
// the signature (§6.3). The reader it is checked against is format.js (and,
// in the browser test, the Rust client).
//
// Resumability: everything random (file key, salt, file id, the sender's
// one-time keys) is drawn once by `prepare` and kept in a plain object the
// page may store; from it, `objectBytes(prepared, file, from)` reproduces the
// identical object bytes from any offset, because AES-GCM under the STREAM
// nonces (§6.1), the tree and Ed25519 are all deterministic. Nonces are never
// reused by construction: the file key is fresh per prepared file, and the
// nonce of chunk i is fixed by i and its final flag, so re-encrypting chunk i
// after a reload produces the same ciphertext, not a second one under the
// same nonce with different content (the file must be the same; if it changed,
// the server's keyless check refuses the object).
//
// Primitives: AES-256-GCM, HMAC and SHA-256 through WebCrypto; HPKE through
// @hpke/core (X25519) and @hpke/hybridkem-x-wing; Ed25519 and X25519 key
// generation and BLAKE3 through @noble. Nothing here implements a primitive.

import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { XWing } from "@hpke/hybridkem-x-wing";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { MAGIC, Tree, chunkNonce, deriveKeys, fingerprint, leaf } from "./format.js";
import { be64, concat, hex, utf8 } from "./bytes.js";
import { CofferError } from "./errors.js";

/** Plaintext bytes per chunk: the Rust writer's default (FORMAT.md allows 256 B to 16 MiB). */
export const CHUNK_SIZE = 64 * 1024;
const TAG = 16;
const SIGNATURE_LEN = 64;
const CLASSIC_LEN = 64;
const HYBRID_LEN = 64 + 1216;
/** Plaintext read from the file at a time (a multiple of CHUNK_SIZE). */
const READ_BLOCK = 64 * CHUNK_SIZE;

const subtle = globalThis.crypto.subtle;

function random(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

function be16(value) {
  return Uint8Array.of(value >> 8, value & 255);
}

function be32(value) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

function popcount(x) {
  let n = 0;
  for (let v = BigInt(x); v; v >>= 1n) n += Number(v & 1n);
  return n;
}

/** n chunks (§6.1) of a plaintext of `size` bytes. */
export function chunkCount(size, chunkSize = CHUNK_SIZE) {
  return size === 0 ? 1 : Math.ceil(size / chunkSize);
}

/** The object's length for `headerLen` bytes of header and stanza section (§7). */
export function objectLength(headerLen, size, chunkSize = CHUNK_SIZE) {
  const n = chunkCount(size, chunkSize);
  const finalSealed = size - (n - 1) * chunkSize + TAG;
  return headerLen + (n - 1) * (chunkSize + TAG) + finalSealed + 32 * (2 * n - popcount(n)) + SIGNATURE_LEN;
}

/**
 * Parses a public identity's bytes (§9.1) into what a writer needs: the
 * recipient's stanza type and key, and its fingerprint. Refuses keys that
 * are not canonical (§9.2) through the libraries' own checks.
 */
export async function recipientOf(identity) {
  if (identity.length !== CLASSIC_LEN && identity.length !== HYBRID_LEN) {
    throw new CofferError("malformed", "a public identity is 64 or 1280 bytes");
  }
  const ed = identity.subarray(0, 32);
  const x = identity.subarray(32, 64);
  if (identity.length === CLASSIC_LEN) {
    const pq = new Uint8Array(32);
    return { type: 1, key: x.slice(), fingerprint: fingerprint(concat(ed, x, pq)) };
  }
  const xwing = identity.slice(64);
  const pq = sha256(concat(utf8("coffer/v2/x-wing-key"), xwing));
  return { type: 2, key: xwing, fingerprint: fingerprint(concat(ed, x, pq)) };
}

function suiteFor(type) {
  const kem = type === 1 ? new DhkemX25519HkdfSha256() : new XWing();
  return new CipherSuite({ kem, kdf: new HkdfSha256(), aead: new Aes256Gcm() });
}

/** §5.3: the detached stanza wrapping `fileKey` for `recipient`, bound to `headerHash`. */
async function wrap(recipient, fileKey, headerHash) {
  const label = recipient.type === 1 ? "coffer/v1/key-id" : "coffer/v2/key-id/x-wing";
  const keyId = sha256(concat(utf8(label), recipient.key)).subarray(0, 8);
  const suite = suiteFor(recipient.type);
  const recipientPublicKey = await suite.kem.deserializePublicKey(recipient.key.slice().buffer);
  const info = concat(utf8("coffer/v2/file-key"), headerHash, keyId);
  const sealed = await suite.seal({ recipientPublicKey, info: info.buffer }, fileKey.slice().buffer);
  const body = concat(keyId, new Uint8Array(sealed.enc), new Uint8Array(sealed.ct));
  return concat(Uint8Array.of(recipient.type), be16(body.length), body);
}

async function hmacSha256(key, data) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}

async function aesKey(raw) {
  return subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt"]);
}

async function seal(key, nonce, plain, aad = new Uint8Array(0)) {
  return new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, key, plain));
}

/**
 * Draws the file's keys and writes its header for `recipient` (from
 * `recipientOf`). `metadata` is the §8 object (name, size, mtime, …); its
 * `size` must be the file's. Returns a plain object of byte arrays and
 * numbers (storable), with the header bytes, the detached stanza and the
 * object's length.
 */
export async function prepare(recipient, metadata) {
  const fileKey = random(32);
  const salt = random(32);
  const fileId = random(16);
  const signingSeed = random(32);
  const senderX25519 = x25519.utils.randomSecretKey();
  const sender = concat(ed25519.getPublicKey(signingSeed), x25519.getPublicKey(senderX25519), new Uint8Array(32));
  const plain = utf8(JSON.stringify(metadata));
  if (plain.length > 65536) throw new CofferError("malformed", "metadata larger than 64 KiB");
  const fixed = concat(MAGIC, be16(2), be16(1), be32(CHUNK_SIZE), fileId, salt, sender, be32(plain.length + TAG));
  const keys = await deriveKeys(2, fileKey, salt);
  const metadataCt = await seal(await aesKey(keys.metadata), new Uint8Array(12), plain, fixed);
  const macInput = concat(fixed, metadataCt);
  const core = concat(macInput, await hmacSha256(keys.headerMac, macInput));
  const headerHash = new Uint8Array(await subtle.digest("SHA-256", core));
  const header = concat(core, be16(0));
  return {
    version: 2,
    size: metadata.size,
    fileId: hex(fileId),
    fileKey,
    signingSeed,
    headerHash,
    header,
    stanza: await wrap(recipient, fileKey, headerHash),
    senderFingerprint: fingerprint(sender),
    length: objectLength(header.length, metadata.size),
  };
}

/**
 * The object's bytes from offset `from` on, as Uint8Arrays, reading the
 * plaintext from `file` (a Blob of `prepared.size` bytes). Chunks before
 * `from` are still sealed and hashed (the tree needs them) but not yielded.
 * Returns the content root (hex) when done. Throws if the file is not the
 * size it had when the upload was prepared.
 */
export async function* objectBytes(prepared, file, from = 0) {
  if (file.size !== prepared.size) throw new CofferError("changed", "the file changed size");
  const salt = prepared.header.subarray(32, 64); // §4.1: the salt is at offset 32
  const payload = await aesKey((await deriveKeys(2, prepared.fileKey, salt)).payload);
  let position = 0;
  /** The part of `bytes` at or after `from`, advancing the position. */
  const visible = (bytes) => {
    const start = position;
    position += bytes.length;
    if (position <= from) return null;
    return start >= from ? bytes : bytes.subarray(from - start);
  };
  const head = visible(prepared.header);
  if (head) yield head;
  const n = chunkCount(prepared.size);
  const tree = new Tree();
  for (let blockStart = 0, i = 0; i < n; blockStart += READ_BLOCK) {
    const block = new Uint8Array(await file.slice(blockStart, blockStart + READ_BLOCK).arrayBuffer());
    if (block.length !== Math.min(READ_BLOCK, prepared.size - blockStart)) {
      throw new CofferError("changed", "the file changed while it was read");
    }
    for (let at = 0; (at < block.length || (n === 1 && i === 0)) && i < n; at += CHUNK_SIZE, i++) {
      const sealed = await seal(payload, chunkNonce(i, i === n - 1), block.subarray(at, at + CHUNK_SIZE));
      const entries = tree.push(leaf(i, sealed));
      const out = visible(concat(sealed, entries));
      if (out) yield out;
    }
  }
  const root = tree.root();
  const message = concat(utf8("coffer/v2/signature"), prepared.headerHash, be64(prepared.size), be64(n), root);
  const signature = visible(ed25519.sign(message, prepared.signingSeed));
  if (signature) yield signature;
  if (position !== prepared.length) throw new CofferError("malformed", "object length differs from the layout");
  return hex(root);
}
