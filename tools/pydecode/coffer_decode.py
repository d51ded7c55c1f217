#!/usr/bin/env python3
"""An independent coffer decoder (versions 1 and 2), written from docs/FORMAT.md alone.

It exists to prove the spec is complete: CI runs it over testdata/v1 and testdata/v2 and
it must reach the same verdict as the Rust implementation for every vector. Primitives
come from `cryptography` (>= 50: HPKE with X25519 and X-Wing, Argon2id, Ed25519,
AES-GCM) and `blake3`; only Bech32 (BIP-173, with the rules of §9.4) is written out here.

    python3 coffer_decode.py FILE IDENTITY_FILE [PASSPHRASE]   # plaintext to stdout
    python3 coffer_decode.py --vectors DIR                     # check a manifest
"""

import base64
import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path

import blake3
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

MAGIC = bytes([0x89]) + b"COFFER\n"
TAG, MAC_LEN = 16, 32
P25519 = 2**255 - 19
# The Ed25519 group order and curve constant, for the canonical-encoding rule of §9.2.
ED_D = (-121665 * pow(121666, P25519 - 2, P25519)) % P25519


class CofferError(Exception):
    def __init__(self, kind, why):
        super().__init__(f"{kind}: {why}")
        self.kind = kind


# --- §9.4 Bech32 (BIP-173, constant 1, no length limit up to 4096, strict padding) ----
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


def bech32_decode(text, hrp_expected):
    if len(text) > 4096 or (text.lower() != text and text.upper() != text):
        raise ValueError("too long or mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or len(text) - pos - 1 < 6:
        raise ValueError("no separator")
    hrp, part = text[:pos], text[pos + 1 :]
    if hrp != hrp_expected or any(c not in CHARSET for c in part):
        raise ValueError("prefix or characters")
    data = [CHARSET.index(c) for c in part]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _polymod(expanded + data) != 1:  # Bech32m's constant is refused
        raise ValueError("checksum")
    acc, bits, out = 0, 0, []
    for v in data[:-6]:
        acc, bits = (acc << 5) | v, bits + 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if bits >= 5 or acc & ((1 << bits) - 1):
        raise ValueError("padding")
    return bytes(out)


# --- §9.2 canonical keys --------------------------------------------------------
def ed25519_canonical(key):
    """RFC 8032 §5.1.3 decoding with y < p, no negative zero, on the curve, large order."""
    y = int.from_bytes(key, "little") & ((1 << 255) - 1)
    sign = key[31] >> 7
    if y >= P25519:
        return False
    u, v = (y * y - 1) % P25519, (ED_D * y * y + 1) % P25519
    x2 = u * pow(v, P25519 - 2, P25519) % P25519
    if x2 == 0:
        if sign:
            return False  # negative zero
    elif pow(x2, (P25519 - 1) // 2, P25519) != 1:
        return False  # not on the curve
    # Small order: 8·P is the neutral element exactly for the eight small-order points.
    return not _ed_times8_is_identity(y, x2, sign)


def _ed_times8_is_identity(y, x2, sign):
    """Extended-coordinate doubling, three times: is 8·P the neutral element?"""
    x = _sqrt(x2)
    if x is None:
        return True
    if (x & 1) != sign:
        x = P25519 - x
    X, Y, Z, T = x, y, 1, x * y % P25519
    for _ in range(3):
        A, B = X * X % P25519, Y * Y % P25519
        C = 2 * Z * Z % P25519
        H = (A + B) % P25519
        E = (H - (X + Y) * (X + Y)) % P25519
        G = (A - B) % P25519
        F = (C + G) % P25519
        X, Y, Z, T = E * F % P25519, G * H % P25519, F * G % P25519, E * H % P25519
    return X % P25519 == 0 and (Y - Z) % P25519 == 0


def _sqrt(a):
    if a == 0:
        return 0
    x = pow(a, (P25519 + 3) // 8, P25519)
    if x * x % P25519 != a:
        x = x * pow(2, (P25519 - 1) // 4, P25519) % P25519
    return x if x * x % P25519 == a else None


def x25519_checked(key):
    if int.from_bytes(key, "little") >= P25519:
        raise ValueError("non-canonical X25519 key")
    probe = X25519PrivateKey.generate()
    try:
        shared = probe.exchange(X25519PublicKey.from_public_bytes(key))
    except ValueError:
        raise ValueError("small-order X25519 key")
    if shared == bytes(32):
        raise ValueError("small-order X25519 key")


def sender_fingerprint(field):
    """§9.1: from the 96-byte sender field (or a 64-byte version 1 sender)."""
    ed, x, pq = field[:32], field[32:64], field[64:96]
    if not pq or pq == bytes(32):
        digest = hashlib.sha256(b"coffer/v1/fingerprint" + ed + x).digest()
    else:
        digest = hashlib.sha256(b"coffer/v2/fingerprint" + ed + x + pq).digest()
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    bits = int.from_bytes(digest[:10], "big")
    text = "".join(alphabet[(bits >> (75 - 5 * i)) & 31] for i in range(16))
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))


def parse_public(text):
    """§9.1, §9.2: returns the raw public identity bytes."""
    raw = bech32_decode(text.strip(), "coffer")
    if len(raw) not in (64, 1280):
        raise ValueError("length")
    if not ed25519_canonical(raw[:32]):
        raise ValueError("Ed25519 key")
    x25519_checked(raw[32:64])
    if len(raw) == 1280:
        t = raw[64 : 64 + 1152]
        coeffs = []
        for i in range(0, 1152, 3):
            a, b, c = t[i], t[i + 1], t[i + 2]
            coeffs += [a | ((b & 15) << 8), (b >> 4) | (c << 4)]
        if any(v >= 3329 for v in coeffs):
            raise ValueError("ML-KEM key")
    return raw


def sender_field(raw):
    pq = hashlib.sha256(b"coffer/v2/x-wing-key" + raw[64:]).digest() if len(raw) == 1280 else bytes(32)
    return raw[:64] + pq


def key_ids(raw):
    ids = {1: hashlib.sha256(b"coffer/v1/key-id" + raw[32:64]).digest()[:8]}
    if len(raw) == 1280:
        ids[2] = hashlib.sha256(b"coffer/v2/key-id/x-wing" + raw[64:]).digest()[:8]
    return ids


# --- §9.3 identity files --------------------------------------------------------------
class Identity:
    def __init__(self, secret):
        self.x25519 = X25519PrivateKey.from_private_bytes(secret[32:64])
        x_public = self.x25519.public_key().public_bytes_raw()
        self.key_ids = {1: hashlib.sha256(b"coffer/v1/key-id" + x_public).digest()[:8]}
        self.xwing = None
        if len(secret) == 96:
            # X-Wing's private key is a seed: SHAKE256(seed, 96) = ML-KEM seed (d||z) || X25519.
            expanded = hashlib.shake_256(secret[64:]).digest(96)
            ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
            xk = X25519PrivateKey.from_private_bytes(expanded[64:96])
            self.xwing = hpke.MLKEM768X25519PrivateKey(ml, xk)
            xwing_public = ml.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
            self.key_ids[2] = hashlib.sha256(b"coffer/v2/key-id/x-wing" + xwing_public).digest()[:8]


def identity_lines(text):
    if text.startswith("\ufeff"):
        text = text[1:]
    for line in text.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        yield line.strip(" \t")


def load_identity(text, passphrase=None):
    secrets = [l for l in identity_lines(text) if l and not l.startswith("#")]
    if len(secrets) != 1:
        raise CofferError("invalid", "not exactly one secret line")
    line = secrets[0]
    if line.startswith("COFFER-PROTECTED-1 "):
        blob_text = line[len("COFFER-PROTECTED-1 ") :]
        if "=" in blob_text or len(blob_text) % 4 == 1:
            raise CofferError("invalid", "base64 padding")
        try:
            blob = base64.b64decode(blob_text + "=" * (-len(blob_text) % 4), validate=True)
        except ValueError:
            raise CofferError("invalid", "base64")
        if base64.b64encode(blob).decode().rstrip("=") != blob_text:
            raise CofferError("invalid", "non-canonical base64")
        if len(blob) not in (12 + 16 + 12 + 80, 12 + 16 + 12 + 112):
            raise CofferError("invalid", "length")
        m, t, p = struct.unpack(">III", blob[:12])
        if not (1 <= t <= 16 and 1 <= p <= 16 and max(8, 8 * p) <= m <= 1048576):
            raise CofferError("invalid", "Argon2 parameters")
        if passphrase is None:
            raise CofferError("invalid", "needs a passphrase")
        key = Argon2id(salt=blob[12:28], length=32, iterations=t, lanes=p, memory_cost=m).derive(passphrase.encode())
        try:
            secret = AESGCM(key).decrypt(blob[28:40], blob[40:], b"coffer/v1/identity" + blob[:12])
        except InvalidTag:
            raise CofferError("wrong-key", "passphrase")
    else:
        try:
            secret = bech32_decode(line, "coffersecret")
        except ValueError as err:
            raise CofferError("invalid", str(err))
        if len(secret) not in (64, 96):
            raise CofferError("invalid", "secret length")
    return Identity(secret)


# --- §5 keys and stanzas -------------------------------------------------------------
def derive(version, file_key, salt):
    prk = hmac.new(salt, file_key, hashlib.sha256).digest()  # HKDF-Extract
    names = ["payload", "metadata", "header-mac"] + (["trailer"] if version == 1 else [])
    tag = b"coffer/v%d/" % version
    return {n: HKDFExpand(hashes.SHA256(), 32, tag + n.encode()).derive(prk) for n in names}


def need(data, end):
    if len(data) < end:
        raise CofferError("truncated", "header")


def parse_header(data):
    """§4.2 and §5.3 (appendix A for version 1): returns (fields, header_len)."""
    if len(data) < 8 or data[:8] != MAGIC:
        raise CofferError("not-coffer", "magic")
    need(data, 10)
    (version,) = struct.unpack(">H", data[8:10])
    if version not in (1, 2):
        raise CofferError("unsupported", f"version {version}")
    fixed_len = 164 if version == 2 else 116
    need(data, fixed_len)
    suite, chunk_size = struct.unpack(">HI", data[10:16])
    if suite != 1:
        raise CofferError("unsupported", f"suite {suite}")
    if not 256 <= chunk_size <= 16 * 1024 * 1024:
        raise CofferError("malformed", "chunk size")
    if version == 2:
        file_id, salt, sender = data[16:32], data[32:64], data[64:160]
    else:
        file_id, salt, sender = bytes(16), data[16:48], data[48:112]
    if not ed25519_canonical(sender[:32]):
        raise CofferError("malformed", "sender Ed25519 key")
    try:
        x25519_checked(sender[32:64])
    except ValueError:
        raise CofferError("malformed", "sender X25519 key")
    (m,) = struct.unpack(">I", data[fixed_len - 4 : fixed_len])
    if not 16 <= m <= 65552:
        raise CofferError("malformed", "metadata length")
    core_len = fixed_len + m + MAC_LEN
    need(data, core_len + 2)
    (count,) = struct.unpack(">H", data[core_len : core_len + 2])
    if count > 256:
        raise CofferError("malformed", "stanza count")
    at, stanzas = core_len + 2, []
    for _ in range(count):
        if version == 1:
            need(data, at + 89)
            if data[at] != 1:
                raise CofferError("malformed", "version 1 stanza type")
            stanzas.append((1, data[at + 1 : at + 89]))
            at += 89
        else:
            need(data, at + 3)
            kind, length = data[at], struct.unpack(">H", data[at + 1 : at + 3])[0]
            if length > 4096:
                raise CofferError("malformed", "stanza body length")
            need(data, at + 3 + length)
            stanzas.append(parse_body(kind, data[at + 3 : at + 3 + length]))
            at += 3 + length
    return {
        "version": version,
        "chunk_size": chunk_size,
        "file_id": file_id,
        "salt": salt,
        "sender": sender,
        "fixed": data[:fixed_len],
        "metadata_ct": data[fixed_len : fixed_len + m],
        "mac_input": data[: fixed_len + m],
        "mac": data[fixed_len + m : core_len],
        "header_hash": hashlib.sha256(data[:core_len]).digest(),
        "stanzas": stanzas,
    }, at


def parse_body(kind, body):
    if (kind, len(body)) in ((1, 88), (2, 1176)) or kind not in (1, 2):
        return (kind, body)
    raise CofferError("malformed", f"type {kind} stanza of {len(body)} bytes")


def parse_detached(blob):
    if len(blob) == 89 and blob[0] == 1:
        return (1, blob[1:])
    if len(blob) < 3 or len(blob) != 3 + struct.unpack(">H", blob[1:3])[0]:
        raise CofferError("malformed", "detached stanza")
    return parse_body(blob[0], blob[3:])


def open_header(header, identity, extra):
    """§5.3: every candidate in order, until one passes the header MAC."""
    version = header["version"]
    info_label = b"coffer/v%d/file-key" % version
    suites = {
        1: (hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM), identity.x25519, 32),
    }
    if identity.xwing is not None and version == 2:
        suites[2] = (hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM), identity.xwing, 1120)
    candidates = [
        (kind, body)
        for kind, body in header["stanzas"] + extra
        if kind in suites and kind in identity.key_ids and body[:8] == identity.key_ids[kind]
    ]
    for kind, body in candidates:
        suite, secret, enc_len = suites[kind]
        try:
            key = suite.decrypt(body[8:], secret, info=info_label + header["header_hash"] + body[:8])
        except Exception:
            continue
        if len(key) != 32:
            continue
        keys = derive(version, key, header["salt"])
        mac = hmac.new(keys["header-mac"], header["mac_input"], hashlib.sha256).digest()
        if hmac.compare_digest(mac, header["mac"]):
            return keys
    raise CofferError("tampered" if candidates else "wrong-key", "no stanza opened")


# --- §8 metadata ------------------------------------------------------------------------
def parse_metadata(plain):
    def no_duplicates(pairs):
        names = [k for k, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError("duplicate member")
        return dict(pairs)

    try:
        text = plain.decode("utf-8")
        meta = json.loads(text, object_pairs_hook=no_duplicates)
        text.encode("utf-8")  # lone surrogates from \ud800 escapes cannot be encoded
        json.dumps(meta, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError):
        raise CofferError("malformed", "metadata is not one JSON object")
    if not isinstance(meta, dict):
        raise CofferError("malformed", "metadata is not an object")
    known = {}
    for key, value in meta.items():
        if key in ("name", "path", "content_type"):
            if not isinstance(value, str):
                raise CofferError("malformed", f"{key} is not a string")
        elif key == "content_blake3":
            if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
                raise CofferError("malformed", "content_blake3 is not 64 lowercase hex digits")
        elif key in ("size", "mtime"):
            lo, hi = (0, 2**63 - 1) if key == "size" else (-(2**63), 2**63 - 1)
            if type(value) is not int or not lo <= value <= hi:
                raise CofferError("malformed", f"{key} is not an integer in range")
        else:
            continue
        known[key] = value
    return known


# --- §6, §7 payload, tree and signature -------------------------------------------------
def nonce(index, last):
    return index.to_bytes(11, "big") + bytes([1 if last else 0])


def leaf(i, sealed):
    return blake3.blake3(i.to_bytes(8, "big") + sealed, derive_key_context="coffer v2 chunk leaf").digest()


def node(left, right):
    return blake3.blake3(left + right, derive_key_context="coffer v2 tree node").digest()


def root_of(leaves):
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node(root_of(leaves[:k]), root_of(leaves[k:]))


def entries_after(i, leaves):
    """§6.2: leaf_i, then the roots of the subtrees chunk i completes."""
    out, j = [leaves[i]], 1
    while (i + 1) % (1 << j) == 0:
        out.append(root_of(leaves[i + 1 - (1 << j) : i + 1]))
        j += 1
    return b"".join(out)


def decrypt(data, identity, extra=()):
    """§11.1, as a stream: each chunk's finality decided by §7.1 from what remains."""
    header, pos = parse_header(data)
    keys = open_header(header, identity, list(extra))
    try:
        meta_plain = AESGCM(keys["metadata"]).decrypt(bytes(12), header["metadata_ct"], header["fixed"])
    except InvalidTag:
        raise CofferError("tampered", "metadata")
    meta = parse_metadata(meta_plain)
    v2 = header["version"] == 2
    S, T = header["chunk_size"] + TAG, (64 if v2 else 120)
    aes, out, leaves, i = AESGCM(keys["payload"]), bytearray(), [], 0
    while True:
        E = 32 * (1 + ((i + 1) & -(i + 1)).bit_length() - 1) if v2 else 0
        rest = len(data) - pos
        if rest > S + E + T:
            sealed = data[pos : pos + S]
            if v2:
                leaves.append(leaf(i, sealed))
                if data[pos + S : pos + S + E] != entries_after(i, leaves):
                    raise CofferError("tampered", f"entries of chunk {i}")
            try:
                out += aes.decrypt(nonce(i, False), sealed, b"")
            except InvalidTag:
                raise CofferError("tampered", f"chunk {i}")
            pos, i = pos + S + E, i + 1
            continue
        if rest < TAG + E + T:
            raise CofferError("truncated", "payload or trailer missing")
        F = rest - E - T
        sealed = data[pos : pos + F]
        try:
            plain = aes.decrypt(nonce(i, True), sealed, b"")
        except InvalidTag:
            # §7.2: does what is left open as a whole chunk at this index?
            for length in (min(rest, S), rest - E):
                for flag in (False, True):
                    try:
                        aes.decrypt(nonce(i, flag), data[pos : pos + length], b"")
                        raise CofferError("truncated", "ends after a complete chunk")
                    except InvalidTag:
                        pass
            raise CofferError("tampered", "final chunk")
        if v2:
            leaves.append(leaf(i, sealed))
            if data[pos + F : pos + F + E] != entries_after(i, leaves):
                raise CofferError("tampered", "entries of the final chunk")
        if not plain and i > 0:
            raise CofferError("malformed", "empty final chunk")
        out += plain
        trailer = data[len(data) - T :]
        break
    sender_key = Ed25519PublicKey.from_public_bytes(header["sender"][:32])
    if v2:
        message = b"coffer/v2/signature" + header["header_hash"] + struct.pack(">QQ", len(out), i + 1) + root_of(leaves)
        try:
            sender_key.verify(trailer, message)
        except InvalidSignature:
            raise CofferError("tampered", "signature")
        content = {"root": root_of(leaves).hex(), "chunk_count": i + 1, "file_id": header["file_id"].hex()}
    else:
        try:
            t = AESGCM(keys["trailer"]).decrypt(bytes(12), trailer, header["header_hash"])
        except InvalidTag:
            raise CofferError("tampered", "trailer")
        length, digest, signature = struct.unpack(">Q", t[:8])[0], t[8:40], t[40:104]
        if length != len(out) or digest != hashlib.sha256(out).digest():
            raise CofferError("tampered", "trailer mismatch")
        try:
            sender_key.verify(signature, b"coffer/v1/signature" + header["header_hash"] + t[:8] + digest)
        except InvalidSignature:
            raise CofferError("tampered", "signature")
        content = {"plaintext_sha256": digest.hex()}
    if "size" in meta and meta["size"] != len(out):
        raise CofferError("malformed", "metadata size")
    return bytes(out), meta, sender_fingerprint(header["sender"]), content


def layout_of(q, S):
    """§7.3: the unique (n, F), or None."""
    def e(n):
        return 32 * (2 * n - bin(n).count("1"))

    n = max(1, q // (S + 64))
    while n > 1 and (n - 1) * S + 16 + e(n) > q:
        n -= 1
    while (n - 1) * S + 16 + e(n) <= q:
        if q <= n * S + e(n):
            return n, q - (n - 1) * S - e(n)
        n += 1
    return None


def read_range(data, identity, start, end):
    """§7.3: authenticate the end, then return start..end checked against the signed root."""
    header, P = parse_header(data)
    keys = open_header(header, identity, [])
    meta = parse_metadata(AESGCM(keys["metadata"]).decrypt(bytes(12), header["metadata_ct"], header["fixed"]))
    S, chunk = header["chunk_size"] + TAG, header["chunk_size"]
    found = layout_of(len(data) - P - 64, S)
    if found is None:
        raise CofferError("malformed", "no layout fits")
    n, F = found
    plaintext_len = (n - 1) * chunk + F - TAG

    def offset(i):
        return P + i * S + 32 * (2 * i - bin(i).count("1"))

    def length(i):
        return F if i == n - 1 else S

    def stored(lo, level):
        last = lo + (1 << level) - 1
        at = offset(last) + length(last) + 32 * level
        return data[at : at + 32]

    def opened(i):
        sealed = data[offset(i) : offset(i) + length(i)]
        try:
            return leaf(i, sealed), AESGCM(keys["payload"]).decrypt(nonce(i, i == n - 1), sealed, b"")
        except InvalidTag:
            raise CofferError("tampered", f"chunk {i}")

    def root_with(lo, hi, mine):
        count = hi - lo
        if count & (count - 1) == 0:
            level = count.bit_length() - 1
            if hi <= min(mine) or lo > max(mine):
                return stored(lo, level)
            if count == 1:
                return mine[lo]
        split = count // 2 if count & (count - 1) == 0 else 1 << (count.bit_length() - 1)
        return node(root_with(lo, lo + split, mine), root_with(lo + split, hi, mine))

    last_leaf, last_plain = opened(n - 1)
    if not last_plain and n > 1:
        raise CofferError("malformed", "empty final chunk")
    root = root_with(0, n, {n - 1: last_leaf})
    message = b"coffer/v2/signature" + header["header_hash"] + struct.pack(">QQ", plaintext_len, n) + root
    try:
        Ed25519PublicKey.from_public_bytes(header["sender"][:32]).verify(data[-64:], message)
    except InvalidSignature:
        raise CofferError("tampered", "signature")
    if "size" in meta and meta["size"] != plaintext_len:
        raise CofferError("malformed", "metadata size")
    if start >= end:
        return b""
    first, last = start // chunk, (end - 1) // chunk
    mine, plain = {}, bytearray()
    for i in range(first, last + 1):
        mine[i], p = opened(i)
        plain += p
    if root_with(0, n, mine) != root:
        raise CofferError("tampered", "the chunks do not lead to the signed root")
    return bytes(plain[start - first * chunk : end - first * chunk])


# --- the vectors -------------------------------------------------------------------------
def check_vectors(directory):
    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    passphrases = {}
    for entry in manifest["identities"]:
        if isinstance(entry, dict):
            passphrases[entry["file"]] = entry.get("passphrase")
    identities = {}

    def identity(name):
        if name not in identities:
            identities[name] = load_identity((directory / name).read_text(encoding="utf-8"), passphrases.get(name))
        return identities[name]

    results = []

    def record(label, verdict, want):
        results.append(verdict == want)
        print(f"{'pass' if verdict == want else 'FAIL'}: {label}: got {verdict}, want {want}")

    for v in manifest.get("files", manifest.get("vectors", [])):
        data = (directory / v["file"]).read_bytes()
        extra = [parse_detached(bytes.fromhex(s)) for s in v.get("stanzas", [])]
        want = "ok" if v["expect"] == "ok" else v["error"]
        try:
            plain, meta, fingerprint, content = decrypt(data, identity(v["identity"]), extra)
            checks = [plain.hex() == v["plaintext_hex"], meta == v["metadata"]]
            checks += [v.get(k) == c for k, c in content.items()]
            if "sender_fingerprint" in v:
                checks.append(fingerprint == v["sender_fingerprint"])
            verdict = "ok" if all(checks) else "mismatch"
        except CofferError as err:
            verdict = err.kind
        record(f"{v['file']} as {v['identity']}", verdict, want)
    for v in manifest.get("ranges", []):
        data = (directory / v["file"]).read_bytes()
        want = "ok" if v["expect"] == "ok" else v["error"]
        try:
            got = read_range(data, identity(v["identity"]), v["start"], v["end"])
            verdict = "ok" if got.hex() == v["plaintext_hex"] else "mismatch"
        except CofferError as err:
            verdict = err.kind
        record(f"range {v['start']}..{v['end']} of {v['file']}", verdict, want)
    for v in manifest.get("identity_files", []):
        want = "ok" if v["expect"] == "ok" else v["error"]
        try:
            load_identity((directory / v["file"]).read_text(encoding="utf-8"), v.get("passphrase"))
            verdict = "ok"
        except CofferError as err:
            verdict = err.kind
        record(f"identity file {v['file']}", verdict, want)
    for v in manifest.get("public_identities", []):
        try:
            raw = parse_public(v["text"])
            fields = sender_field(raw)
            ok = v["expect"] == "ok" and sender_fingerprint(fields) == v["fingerprint"]
            ok = ok and fields.hex() == v["sender_field"]
            ok = ok and key_ids(raw)[2 if len(raw) == 1280 else 1].hex() == v["key_id"]
            verdict = "ok" if ok else "mismatch"
        except ValueError:
            verdict = "error"
        record(f"public identity ({v['note']})", verdict, v["expect"])
    for v in manifest.get("key_schedule", []):
        keys = derive(2, bytes.fromhex(v["file_key"]), bytes.fromhex(v["salt"]))
        ok = [keys["payload"].hex(), keys["metadata"].hex(), keys["header-mac"].hex()] == [
            v["payload_key"], v["metadata_key"], v["header_key"]]
        record("key schedule", "ok" if ok else "mismatch", "ok")
    for v in manifest.get("tree", []):
        chunks = [bytes.fromhex(c) for c in v["sealed_chunks_hex"]]
        leaves = [leaf(i, c) for i, c in enumerate(chunks)]
        entries = b"".join(entries_after(i, leaves[: i + 1]) for i in range(len(leaves)))
        ok = [l.hex() for l in leaves] == v["leaves"] and entries.hex() == v["entries_hex"]
        ok = ok and root_of(leaves).hex() == v["root"]
        record("content tree", "ok" if ok else "mismatch", "ok")
    for v in manifest.get("layouts", []):
        got = layout_of(v["payload_len"], v["sealed_chunk"])
        want = None if v["chunk_count"] is None else (v["chunk_count"], v["final_len"])
        record(f"layout of {v['payload_len']}", str(got), str(want))
    failures = results.count(False)
    print(f"{len(results) - failures} passed, {failures} failed")
    return failures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--vectors"]:
        total = sum(check_vectors(d) for d in sys.argv[2:])
        sys.exit(1 if total else 0)
    me = load_identity(Path(sys.argv[2]).read_text(encoding="utf-8"), sys.argv[3] if len(sys.argv) > 3 else None)
    try:
        plaintext, _, _, _ = decrypt(Path(sys.argv[1]).read_bytes(), me)
    except CofferError as err:
        sys.exit(f"coffer_decode: {err}")
    sys.stdout.buffer.write(plaintext)
