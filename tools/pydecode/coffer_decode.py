#!/usr/bin/env python3
"""An independent coffer v1 decoder, written from docs/FORMAT.md alone.

It exists to prove the spec is complete: CI runs it over testdata/v1 and it
must reach the same verdict as the Rust implementation for every vector.
Primitives come from the `cryptography` package (>= 46, for HPKE); only the
Bech32 text encoding is written out here (BIP-173 reference algorithm).

    python3 coffer_decode.py FILE IDENTITY_FILE     # plaintext to stdout
    python3 coffer_decode.py --vectors DIR          # check a manifest
"""

import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

MAGIC = bytes([0x89]) + b"COFFER\n"
FIXED_LEN, MAC_LEN, STANZA_LEN, TRAILER_LEN, TAG = 116, 32, 89, 120, 16


class CofferError(Exception):
    def __init__(self, kind, why):
        super().__init__(f"{kind}: {why}")
        self.kind = kind


# --- Bech32 (BIP-173), decode only -------------------------------------------------
CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values):
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def bech32_decode(text):
    text = text.strip().lower()
    pos = text.rfind("1")
    hrp, data = text[:pos], [CHARSET.index(c) for c in text[pos + 1 :]]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _polymod(expanded + data) != 1:
        raise ValueError("bad checksum")
    acc, bits, out = 0, 0, []
    for v in data[:-6]:
        acc, bits = (acc << 5) | v, bits + 5
        while bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return hrp, bytes(out)


# --- Spec sections --------------------------------------------------------------------
def load_identity(path):
    """§8: the first non-comment line is COFFERSECRET1… (unprotected only here)."""
    line = next(l.strip() for l in Path(path).read_text().splitlines() if l.strip() and not l.startswith("#"))
    hrp, secret = bech32_decode(line)
    assert hrp == "coffersecret" and len(secret) == 64
    x_secret = X25519PrivateKey.from_private_bytes(secret[32:])
    x_public = x_secret.public_key().public_bytes_raw()
    key_id = hashlib.sha256(b"coffer/v1/key-id" + x_public).digest()[:8]
    return x_secret, key_id


def expand(prk, label):
    return HKDFExpand(hashes.SHA256(), 32, label).derive(prk)


def derive(file_key, salt):
    """§5.1"""
    prk = hmac.new(salt, file_key, hashlib.sha256).digest()  # HKDF-Extract
    return {name: expand(prk, b"coffer/v1/" + name.encode()) for name in ("payload", "metadata", "header-mac", "trailer")}


def parse_header(data):
    """§4.1, §4.2: returns (fields, header_len)."""
    if len(data) < 8 or data[:8] != MAGIC:
        raise CofferError("not-coffer", "magic")
    if len(data) < FIXED_LEN:
        raise CofferError("truncated", "header")
    version, suite, chunk_size = struct.unpack(">HHI", data[8:16])
    if version != 1 or suite != 1:
        raise CofferError("unsupported", f"version {version} suite {suite}")
    (m,) = struct.unpack(">I", data[112:116])
    if not (256 <= chunk_size <= 16 * 1024 * 1024) or not (16 <= m <= 65552):
        raise CofferError("tampered", "malformed header")
    core_len = FIXED_LEN + m + MAC_LEN
    if len(data) < core_len + 2:
        raise CofferError("truncated", "header")
    (count,) = struct.unpack(">H", data[core_len : core_len + 2])
    if count > 256:
        raise CofferError("tampered", "too many stanzas")
    end = core_len + 2 + count * STANZA_LEN
    if len(data) < end:
        raise CofferError("truncated", "stanzas")
    stanzas = [data[core_len + 2 + i * STANZA_LEN : core_len + 2 + (i + 1) * STANZA_LEN] for i in range(count)]
    return {
        "chunk_size": chunk_size,
        "salt": data[16:48],
        "sender_ed25519": data[48:80],
        "fixed": data[:FIXED_LEN],
        "metadata_ct": data[FIXED_LEN : FIXED_LEN + m],
        "mac_input": data[: FIXED_LEN + m],
        "mac": data[FIXED_LEN + m : core_len],
        "header_hash": hashlib.sha256(data[:core_len]).digest(),
        "stanzas": stanzas,
    }, end


def unwrap(header, x_secret, key_id):
    """§5.3"""
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    info = b"coffer/v1/file-key" + header["header_hash"] + key_id
    ours = [s for s in header["stanzas"] if s[0] == 1 and s[1:9] == key_id]
    for stanza in ours:
        try:
            key = suite.decrypt(stanza[9:41] + stanza[41:89], x_secret, info=info)
            if len(key) == 32:
                return key
        except Exception:
            continue
    raise CofferError("tampered" if ours else "wrong-key", "no stanza opened")


def nonce(index, last):
    return index.to_bytes(11, "big") + bytes([1 if last else 0])


def decrypt(data, x_secret, key_id):
    """§9, with the whole file in memory (so §4.5's random-access positions apply)."""
    header, start = parse_header(data)
    file_key = unwrap(header, x_secret, key_id)
    keys = derive(file_key, header["salt"])
    expected_mac = hmac.new(keys["header-mac"], header["mac_input"], hashlib.sha256).digest()
    if not hmac.compare_digest(expected_mac, header["mac"]):
        raise CofferError("tampered", "header MAC")
    try:
        meta = json.loads(AESGCM(keys["metadata"]).decrypt(bytes(12), header["metadata_ct"], header["fixed"]))
    except (InvalidTag, ValueError):
        raise CofferError("tampered", "metadata")
    sealed_chunk = header["chunk_size"] + TAG
    payload_len = len(data) - TRAILER_LEN - start
    if payload_len < TAG:
        raise CofferError("truncated", "payload")
    n = -(-payload_len // sealed_chunk)
    aes, out = AESGCM(keys["payload"]), bytearray()
    for i in range(n):
        chunk = data[start + i * sealed_chunk : min(start + (i + 1) * sealed_chunk, start + payload_len)]
        last = i == n - 1
        try:
            plain = aes.decrypt(nonce(i, last), chunk, b"")
        except InvalidTag:
            if last:  # §9: does the remainder open as a whole chunk at this index?
                rest = data[start + i * sealed_chunk :][:sealed_chunk]
                for flag in (False, True):
                    try:
                        aes.decrypt(nonce(i, flag), rest, b"")
                        raise CofferError("truncated", "ends after a complete chunk")
                    except InvalidTag:
                        pass
            raise CofferError("tampered", f"chunk {i}")
        if last and not plain and i > 0:
            raise CofferError("tampered", "empty final chunk")
        out += plain
    try:
        trailer = AESGCM(keys["trailer"]).decrypt(bytes(12), data[-TRAILER_LEN:], header["header_hash"])
    except InvalidTag:
        raise CofferError("tampered", "trailer")
    (length,), digest, signature = struct.unpack(">Q", trailer[:8]), trailer[8:40], trailer[40:104]
    if length != len(out) or digest != hashlib.sha256(out).digest():
        raise CofferError("tampered", "trailer mismatch")
    message = b"coffer/v1/signature" + header["header_hash"] + trailer[:8] + digest
    try:
        Ed25519PublicKey.from_public_bytes(header["sender_ed25519"]).verify(signature, message)
    except InvalidSignature:
        raise CofferError("tampered", "signature")
    if "size" in meta and meta["size"] != length:
        raise CofferError("tampered", "metadata size")
    return bytes(out), meta


def check_vectors(directory):
    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    failures = 0
    for v in manifest["vectors"]:
        x_secret, key_id = load_identity(directory / v["identity"])
        data = (directory / v["file"]).read_bytes()
        try:
            plain, meta = decrypt(data, x_secret, key_id)
            verdict = "ok" if plain.hex() == v.get("plaintext_hex") and meta == v.get("metadata") else "mismatch"
        except CofferError as err:
            verdict = err.kind
        want = "ok" if v["expect"] == "ok" else v["error"]
        status = "pass" if verdict == want else "FAIL"
        failures += status == "FAIL"
        print(f"{status}: {v['file']} as {v['identity']}: got {verdict}, want {want}")
    print(f"{len(manifest['vectors']) - failures} passed, {failures} failed")
    return failures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--vectors"]:
        sys.exit(1 if check_vectors(sys.argv[2]) else 0)
    secret, kid = load_identity(sys.argv[2])
    try:
        plaintext, _ = decrypt(Path(sys.argv[1]).read_bytes(), secret, kid)
    except CofferError as err:
        sys.exit(f"coffer_decode: {err}")
    sys.stdout.buffer.write(plaintext)
