// The upload-link page derives what crates/coffer-proto/src/request.rs
// derives: the same known answers as its tests.
import { test } from "node:test";
import assert from "node:assert/strict";

globalThis.location ??= { hash: "", pathname: "/" };

test("access proof, password proof and pin match the Rust known answers", async () => {
  const { accessProof, passwordProof, pinOf } = await import("../src/request-keys.js");
  assert.equal(await passwordProof(new Uint8Array(32).fill(1), "correct horse"), "N0MGpDCB2rfPzqRSkCT6gA6s21vQSm0mta4OGM9ED9w");
  assert.equal(await accessProof(new Uint8Array(32).fill(1)), "Qy4FXBsb1iuQ0TEAIB70eXnrd9SvmGOZHBS1LoLa84w");
  assert.equal(await pinOf(new Uint8Array(64).fill(7)), "j5DvvDqAPwBtx8Lor9gxhm_uBcaURFBD1TDBnv1l7kU");
});
