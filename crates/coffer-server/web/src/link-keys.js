// Share-link keys, as crates/coffer-proto/src/link.rs defines them (its doc
// comment is the specification; its known-answer test pins the access proof,
// which web/test/link-keys.test.mjs checks here too).

import { argon2idAsync } from "@noble/hashes/argon2.js";
import { b64url, concat, utf8 } from "./bytes.js";

export const SECRET_LEN = 32;
export const SALT_LEN = 16;
const ARGON2 = { m: 64 * 1024, t: 3, p: 1, dkLen: 32 };

async function hkdf(salt, ikm, info, bytes) {
  const key = await crypto.subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info: utf8(info) }, key, bytes * 8);
  return new Uint8Array(bits);
}

/** What the server checks to know a request comes from someone holding the URL. */
export async function accessProof(secret) {
  return b64url(await hkdf(new Uint8Array(0), secret, "coffer/v1/link-access", 32));
}

/** Argon2id of the password under the link's salt: slow on purpose (several seconds here). */
export async function passwordKey(password, salt, onProgress) {
  return argon2idAsync(utf8(password), salt, { ...ARGON2, onProgress });
}

/** The value sent to the server as the link password (it never sees the password). */
export async function serverValue(pwKey, salt) {
  return b64url(await hkdf(salt, pwKey, "coffer/v1/link-password", 32));
}

/** The link identity's secret keys: Ed25519 seed and X25519 secret (a classic identity). */
export async function linkSecret(secret, salt, pwKey) {
  const material = await hkdf(salt, concat(secret, pwKey ?? new Uint8Array(0)), "coffer/v1/link-key", 64);
  return { x25519Secret: material.slice(32, 64) };
}
