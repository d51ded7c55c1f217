// §8 metadata: exactly one JSON object, no member name twice, known members
// of exactly their type.
//
// Why a parser here: JSON.parse keeps the last of two equal member names and
// cannot say it saw two, and a sender could then show the page one name and
// the CLI another. This validating scan (RFC 8259 grammar, nothing more)
// refuses duplicates and unpaired surrogate escapes; JSON.parse then builds
// the value from text already known to be valid.

import { CofferError } from "./errors.js";

const MAX_SIZE = 2n ** 63n - 1n;
const MIN_MTIME = -(2n ** 63n);

export function parseMetadata(bytes) {
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new CofferError("malformed", "metadata is not UTF-8");
  }
  const scan = new Scanner(text);
  scan.space();
  if (text[scan.at] !== "{") throw new CofferError("malformed", "metadata is not a JSON object");
  const integers = new Map();
  scan.value(integers);
  scan.space();
  if (scan.at !== text.length) throw new CofferError("malformed", "text after the metadata object");
  return checkMembers(JSON.parse(text), integers);
}

function checkMembers(meta, integers) {
  const known = {};
  for (const [key, value] of Object.entries(meta)) {
    if (key === "name" || key === "path" || key === "content_type") {
      if (typeof value !== "string") throw new CofferError("malformed", `${key} is not a string`);
      known[key] = value;
    } else if (key === "content_blake3") {
      if (typeof value !== "string" || !/^[0-9a-f]{64}$/.test(value)) {
        throw new CofferError("malformed", "content_blake3 is not 64 lowercase hex digits");
      }
      known[key] = value;
    } else if (key === "size" || key === "mtime") {
      const exact = integers.get(key);
      const [lo, hi] = key === "size" ? [0n, MAX_SIZE] : [MIN_MTIME, MAX_SIZE];
      if (exact === undefined || exact < lo || exact > hi) {
        throw new CofferError("malformed", `${key} is not an integer in range`);
      }
      // Sizes above 2^53 cannot be files a browser handles; keep them exact anyway.
      known[key] = exact <= BigInt(Number.MAX_SAFE_INTEGER) && exact >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(exact) : exact;
    }
  }
  return known;
}

class Scanner {
  constructor(text) {
    this.text = text;
    this.at = 0;
    this.depth = 0;
  }

  fail(why) {
    throw new CofferError("malformed", `metadata: ${why}`);
  }

  space() {
    while (" \t\n\r".includes(this.text[this.at]) && this.at < this.text.length) this.at++;
  }

  /** One value; `integers` collects the top-level members that are integer literals. */
  value(integers) {
    this.space();
    const c = this.text[this.at];
    if (c === "{") return this.object(integers);
    if (c === "[") return this.array();
    if (c === '"') return this.string();
    if (c === "-" || (c >= "0" && c <= "9")) return this.number();
    for (const word of ["true", "false", "null"]) {
      if (this.text.startsWith(word, this.at)) {
        this.at += word.length;
        return null;
      }
    }
    this.fail("not a JSON value");
  }

  enter() {
    if (++this.depth > 64) this.fail("nested too deeply");
  }

  object(integers) {
    this.enter();
    this.at++;
    const names = new Set();
    this.space();
    if (this.text[this.at] === "}") {
      this.at++;
      this.depth--;
      return;
    }
    for (;;) {
      this.space();
      if (this.text[this.at] !== '"') this.fail("member name expected");
      const name = this.string();
      if (names.has(name)) this.fail(`member "${name}" appears twice`);
      names.add(name);
      this.space();
      if (this.text[this.at++] !== ":") this.fail("':' expected");
      this.space();
      const start = this.at;
      const literal = this.value(undefined);
      if (integers && typeof literal === "string" && /^-?(0|[1-9][0-9]*)$/.test(this.text.slice(start, this.at))) {
        integers.set(name, BigInt(this.text.slice(start, this.at)));
      }
      this.space();
      const next = this.text[this.at++];
      if (next === "}") break;
      if (next !== ",") this.fail("',' or '}' expected");
    }
    this.depth--;
  }

  array() {
    this.enter();
    this.at++;
    this.space();
    if (this.text[this.at] === "]") {
      this.at++;
      this.depth--;
      return;
    }
    for (;;) {
      this.value(undefined);
      this.space();
      const next = this.text[this.at++];
      if (next === "]") break;
      if (next !== ",") this.fail("',' or ']' expected");
    }
    this.depth--;
  }

  /** Returns the decoded string; refuses control characters and unpaired surrogates. */
  string() {
    const start = this.at;
    this.at++;
    for (;;) {
      const c = this.text[this.at];
      if (c === undefined) this.fail("unterminated string");
      if (c === '"') break;
      if (c < " ") this.fail("control character in a string");
      if (c === "\\") {
        const e = this.text[this.at + 1];
        if (e === "u") {
          if (!/^[0-9a-fA-F]{4}$/.test(this.text.slice(this.at + 2, this.at + 6))) this.fail("bad \\u escape");
          this.at += 6;
          continue;
        }
        if (!'"\\/bfnrt'.includes(e) || e === undefined) this.fail("bad escape");
        this.at += 2;
        continue;
      }
      this.at++;
    }
    this.at++;
    const decoded = JSON.parse(this.text.slice(start, this.at));
    if (!decoded.isWellFormed()) this.fail("unpaired surrogate in a string");
    return decoded;
  }

  /** Returns a marker string so `object` can tell integer literals by their text. */
  number() {
    const match = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(this.text.slice(this.at));
    if (!match) this.fail("bad number");
    this.at += match[0].length;
    return match[2] || match[3] ? 0 : "int";
  }
}
