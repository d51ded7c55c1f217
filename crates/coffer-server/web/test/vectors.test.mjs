// The browser decoder (src/format.js) against the shared vectors of both
// format versions: the same verdict as crates/coffer-format and
// tools/pydecode for every file the page could be handed (classic and hybrid
// recipients; the protected identity needs Argon2 and is covered by the Rust
// and Python decoders).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { decrypt, parseDetached, recipientKeys, CofferError } from "../src/format.js";
import { fromHex, hex } from "../src/bytes.js";

const root = new URL("../../../../testdata/", import.meta.url);

// Test-only: reads the COFFERSECRET1… line of an identity file (§9.3, §9.4).
const CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
function secretOf(text) {
  const line = text.split("\n").map((l) => l.replace(/\r$/, "").trim()).find((l) => l && !l.startsWith("#"));
  if (!line?.startsWith("COFFERSECRET1")) return null;
  const data = [...line.toLowerCase().slice("coffersecret1".length, -6)].map((c) => CHARSET.indexOf(c));
  let acc = 0, bits = 0;
  const out = [];
  for (const v of data) {
    acc = ((acc << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >> bits) & 0xff);
    }
  }
  return Uint8Array.from(out);
}

async function run(dir, vector, identities) {
  const secret = identities(vector.identity);
  if (!secret) return "skipped";
  const recipient = await recipientKeys({ x25519Secret: secret.subarray(32, 64), xwingSeed: secret.length === 96 ? secret.subarray(64) : undefined });
  const data = readFileSync(new URL(vector.file, dir));
  const detached = (vector.stanzas ?? []).map((s) => parseDetached(fromHex(s)));
  async function* source() {
    for (let at = 0; at < data.length; at += 1000) yield new Uint8Array(data.subarray(at, at + 1000));
  }
  const parts = [];
  let info;
  try {
    const it = decrypt(source(), recipient, { detached });
    for (;;) {
      const step = await it.next();
      if (step.done) {
        info = { ...info, ...step.value };
        break;
      }
      if (step.value instanceof Uint8Array) parts.push(...step.value);
      else info = step.value;
    }
  } catch (err) {
    if (err instanceof CofferError) return err.kind;
    throw err;
  }
  assert.equal(hex(Uint8Array.from(parts)), vector.plaintext_hex, vector.file);
  assert.deepEqual(info.metadata, vector.metadata, vector.file);
  if (vector.sender_fingerprint) assert.equal(info.fingerprint, vector.sender_fingerprint);
  if (vector.root) assert.equal(hex(info.root), vector.root);
  if (vector.file_id) assert.equal(hex(info.fileId), vector.file_id);
  if (vector.chunk_count) assert.equal(info.chunkCount, vector.chunk_count);
  return "ok";
}

for (const version of ["v1", "v2"]) {
  test(`the page decoder agrees with the ${version} vectors`, async () => {
    const dir = new URL(`${version}/`, root);
    const manifest = JSON.parse(readFileSync(new URL("manifest.json", dir)));
    const cache = new Map();
    const identities = (name) => {
      if (!cache.has(name)) cache.set(name, secretOf(readFileSync(new URL(name, dir), "utf8")));
      return cache.get(name);
    };
    let checked = 0;
    for (const vector of manifest.files ?? manifest.vectors) {
      const verdict = await run(dir, vector, identities);
      if (verdict === "skipped") continue;
      assert.equal(verdict, vector.expect === "ok" ? "ok" : vector.error, `${vector.file} as ${vector.identity}`);
      checked++;
    }
    assert.ok(checked >= (version === "v1" ? 10 : 40), `only ${checked} vectors checked`);
  });
}
