// Names come from the decrypted metadata, which any sender controls.
import { test } from "node:test";
import assert from "node:assert/strict";
import { safeName } from "../src/sinks.js";
import { parseMetadata } from "../src/metadata.js";

test("a hostile name becomes one harmless component", () => {
  assert.equal(safeName("../../etc/passwd"), "passwd");
  assert.equal(safeName("C:\\Windows\\evil.exe"), "evil.exe");
  assert.equal(safeName("invoice\u202Efdp.exe"), "invoicefdp.exe");
  assert.equal(safeName("a\u0000b\nc"), "abc");
  assert.equal(safeName(".."), "download");
  assert.equal(safeName(".bashrc"), "bashrc");
  assert.equal(safeName(undefined), "download");
  assert.equal(safeName("x".repeat(500)).length, 200);
});

test("metadata with a member twice, or not one object, is refused", () => {
  const enc = (t) => new TextEncoder().encode(t);
  assert.deepEqual(parseMetadata(enc(' {"name":"a.txt","size":3,"extra":[1,{"x":null}]} ')), { name: "a.txt", size: 3 });
  for (const bad of ['{"name":"a","name":"b"}', '[1]', '{"size":1.0}', '{"size":null}', '{"name":"\\ud800"}', '{} x', '{"size":-1}']) {
    assert.throws(() => parseMetadata(enc(bad)), /malformed/, bad);
  }
});
