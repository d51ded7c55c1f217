// The page derives link keys as the Rust client does (crates/coffer-proto/src/link.rs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { accessProof } from "../src/link-keys.js";

test("the access proof matches the Rust known answer", async () => {
  assert.equal(await accessProof(new Uint8Array(32).fill(1)), "-cpfocg1V4lGD1VmnUHkEBvCWYeXbHoYzbNbYJjZY-M");
  assert.notEqual(await accessProof(new Uint8Array(32).fill(2)), "-cpfocg1V4lGD1VmnUHkEBvCWYeXbHoYzbNbYJjZY-M");
});
