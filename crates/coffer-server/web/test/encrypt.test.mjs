// The browser writer (src/encrypt.js) against the browser reader
// (src/format.js): what one writes the other opens, from any resume offset
// the bytes are identical, and a change to the file or the object is caught.
import { test } from "node:test";
import assert from "node:assert/strict";
import { x25519, ed25519 } from "@noble/curves/ed25519.js";
import { XWing } from "@hpke/hybridkem-x-wing";
import { CHUNK_SIZE, objectBytes, prepare, recipientOf } from "../src/encrypt.js";
import { decrypt, parseDetached, recipientKeys, CofferError } from "../src/format.js";
import { concat } from "../src/bytes.js";

async function collect(generator) {
  const parts = [];
  let next;
  while (!(next = await generator.next()).done) parts.push(next.value);
  return { bytes: concat(...parts), result: next.value };
}

async function* once(bytes) {
  yield bytes;
}

async function classicRecipient() {
  const secret = x25519.utils.randomSecretKey();
  const identity = concat(ed25519.getPublicKey(ed25519.utils.randomSecretKey()), x25519.getPublicKey(secret));
  return { identity, keys: await recipientKeys({ x25519Secret: secret }) };
}

async function hybridRecipient() {
  const secret = x25519.utils.randomSecretKey();
  const seed = crypto.getRandomValues(new Uint8Array(32));
  const pair = await new XWing().generateKeyPairDerand(seed.slice());
  const xwing = new Uint8Array(await new XWing().serializePublicKey(pair.publicKey));
  const identity = concat(ed25519.getPublicKey(ed25519.utils.randomSecretKey()), x25519.getPublicKey(secret), xwing);
  return { identity, keys: await recipientKeys({ x25519Secret: secret, xwingSeed: seed }) };
}

async function roundTrip(who, size) {
  const plain = crypto.getRandomValues(new Uint8Array(Math.min(size, 65536))).slice();
  const data = new Uint8Array(size);
  for (let at = 0; at < size; at += plain.length) data.set(plain.subarray(0, size - at), at);
  const file = new Blob([data]);
  const recipient = await recipientOf(who.identity);
  const prepared = await prepare(recipient, { name: "scan.pdf", size, request: "ab".repeat(16) });
  const { bytes, result: root } = await collect(objectBytes(prepared, file));
  assert.equal(bytes.length, prepared.length, "the declared length is the written length");
  const out = [];
  const reader = decrypt(once(bytes), who.keys, { detached: [parseDetached(prepared.stanza)] });
  const first = await reader.next();
  assert.equal(first.value.metadata.name, "scan.pdf");
  assert.equal(first.value.fingerprint, prepared.senderFingerprint);
  let next;
  while (!(next = await reader.next()).done) out.push(next.value);
  assert.deepEqual(concat(...out), data);
  assert.equal(Buffer.from(next.value.root).toString("hex"), root);
  return { prepared, file, bytes };
}

test("a classic and a hybrid recipient open what the page writes", async () => {
  for (const size of [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * CHUNK_SIZE - 3]) {
    await roundTrip(await classicRecipient(), size);
  }
  await roundTrip(await hybridRecipient(), 3 * CHUNK_SIZE + 7);
});

test("resuming from any offset yields the same bytes", async () => {
  const { prepared, file, bytes } = await roundTrip(await hybridRecipient(), 70 * CHUNK_SIZE + 11);
  for (const from of [1, prepared.header.length, 65536 * 64 + 5, bytes.length - 64, bytes.length - 1]) {
    const { bytes: tail } = await collect(objectBytes(prepared, file, from));
    assert.deepEqual(tail, bytes.subarray(from), `from ${from}`);
  }
});

test("a changed file or object is refused", async () => {
  const who = await classicRecipient();
  const { prepared, bytes } = await roundTrip(who, 3 * CHUNK_SIZE);
  await assert.rejects(collect(objectBytes(prepared, new Blob([new Uint8Array(5)]))), (e) => e.kind === "changed");
  const flipped = bytes.slice();
  flipped[flipped.length - 100] ^= 1;
  const reader = decrypt(once(flipped), who.keys, { detached: [parseDetached(prepared.stanza)] });
  await assert.rejects(collect(reader), (e) => e instanceof CofferError && e.kind === "tampered");
});

test("only public identities of the two sizes are taken", async () => {
  await assert.rejects(recipientOf(new Uint8Array(63)), (e) => e.kind === "malformed");
});
