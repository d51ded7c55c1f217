// Upload-link derivations, as crates/coffer-proto/src/request.rs defines them
// (its doc comment is the specification; web/test/request-keys.test.mjs checks
// its known answers here).

import { b64url, concat, utf8 } from "./bytes.js";

/** What the server checks to know a request comes from someone holding the URL. */
export async function accessProof(secret) {
  const key = await crypto.subtle.importKey("raw", secret, "HKDF", false, ["deriveBits"]);
  const info = utf8("coffer/v1/request-access");
  const bits = await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info }, key, 256);
  return b64url(new Uint8Array(bits));
}

/** What the page sends for the link's password: bound to the URL secret, so the server never sees the password. */
export async function passwordProof(secret, password) {
  const key = await crypto.subtle.importKey("raw", utf8(password), "HKDF", false, ["deriveBits"]);
  const info = utf8("coffer/v1/request-password");
  const bits = await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: secret, info }, key, 256);
  return b64url(new Uint8Array(bits));
}

/** The pin of a public identity's bytes, which the URL carries in `r`. */
export async function pinOf(identity) {
  const digest = await crypto.subtle.digest("SHA-256", concat(utf8("coffer/v1/request-pin"), identity));
  return b64url(new Uint8Array(digest));
}
