#!/usr/bin/env python3
"""Regenerate the seed corpus of tests/fuzz/fuzz_pubkey.c (tests/fuzz/corpus/pubkey/).

Each seed is  u8 key_len | key | u8 sig_len | sig | nonce[32] | u8 uid_len | uid | u8 slot  (see the
fuzz target), built the way a device answers KEYGEN and ATTEST (docs/protocol.md §5.3, §5.9): valid
proofs and attestations on P-256 and P-384, and the malformed keys and signatures the station must
refuse. Needs python3-cryptography; the seeds are checked in, so this runs only to change them.

    tests/hsm/gen_pubkey_corpus.py tests/fuzz/corpus/pubkey
"""
import hashlib
import os
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography import x509
from cryptography.x509.oid import NameOID
import datetime

N256 = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256 = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF


def point(key):
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint)


def raw_sig(key, label, nonce, uid, slot):
    msg = label + nonce + bytes([len(uid)]) + uid + bytes([slot])
    r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
    fs = (key.curve.key_size + 7) // 8
    return r.to_bytes(fs, "big") + s.to_bytes(fs, "big")


def seed(key, sig, nonce, uid, slot):
    return bytes([len(key)]) + key + bytes([len(sig)]) + sig + nonce + bytes([len(uid)]) + uid + \
        bytes([slot])


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seeds = {}
    nonce = bytes(range(32))
    uid = bytes.fromhex("0123456789abcdef")
    for curve, name in ((ec.SECP256R1(), "p256"), (ec.SECP384R1(), "p384")):
        k = ec.generate_private_key(curve)
        pt = point(k)
        pop = raw_sig(k, b"KILN-POP-V1", nonce, uid, 2)
        att = raw_sig(k, b"KILN-ATTEST-V1", nonce, uid, 2)
        seeds[f"{name}-pop-ok"] = seed(pt, pop, nonce, uid, 2)
        seeds[f"{name}-attest-ok"] = seed(pt, att, nonce, uid, 2)
        seeds[f"{name}-pop-wrong-slot"] = seed(pt, pop, nonce, uid, 3)
        seeds[f"{name}-pop-wrong-nonce"] = seed(pt, pop, bytes(32), uid, 2)
        seeds[f"{name}-sig-short"] = seed(pt, pop[:-1], nonce, uid, 2)
        seeds[f"{name}-sig-long"] = seed(pt, pop + b"\0", nonce, uid, 2)
        seeds[f"{name}-sig-zero"] = seed(pt, bytes(len(pop)), nonce, uid, 2)
        seeds[f"{name}-off-curve"] = seed(pt[:-1] + bytes([pt[-1] ^ 1]), pop, nonce, uid, 2)
        seeds[f"{name}-compressed"] = seed(
            k.public_key().public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.CompressedPoint),
            pop, nonce, uid, 2)
        seeds[f"{name}-bare-point"] = pt
        uid32 = bytes(range(32))
        seeds[f"{name}-uid-max"] = seed(pt, raw_sig(k, b"KILN-POP-V1", nonce, uid32, 0), nonce,
                                        uid32, 0)
        # a certificate carrying the key: hsm_devkey_from_cert
        cert = x509.CertificateBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seed")])).issuer_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seed")])).public_key(
            k.public_key()).serial_number(1).not_valid_before(
            datetime.datetime(2026, 1, 1)).not_valid_after(
            datetime.datetime(2027, 1, 1)).sign(k, hashes.SHA256())
        seeds[f"{name}-cert"] = cert.public_bytes(serialization.Encoding.DER)
    k = ec.generate_private_key(ec.SECP256R1())
    pt = point(k)
    pop = raw_sig(k, b"KILN-POP-V1", nonce, uid, 0)
    for prefix in (0x00, 0x02, 0x03, 0x05, 0x06, 0x07, 0xff):
        seeds[f"p256-prefix-{prefix:02x}"] = seed(bytes([prefix]) + pt[1:], pop, nonce, uid, 0)
    seeds["infinity-1"] = seed(b"\0", pop, nonce, uid, 0)
    seeds["infinity-65"] = seed(bytes(65), pop, nonce, uid, 0)
    seeds["zero-point"] = seed(b"\x04" + bytes(64), pop, nonce, uid, 0)
    seeds["x-is-p"] = seed(b"\x04" + P256.to_bytes(32, "big") + pt[33:], pop, nonce, uid, 0)
    seeds["len-64"] = seed(pt[:64], pop, nonce, uid, 0)
    seeds["len-66"] = seed(pt + b"\0", pop, nonce, uid, 0)
    seeds["len-0"] = seed(b"", pop, nonce, uid, 0)
    seeds["uid-0"] = seed(pt, pop, nonce, b"", 0)
    seeds["uid-33"] = seed(pt, pop, nonce, bytes(33), 0)
    seeds["s-is-n"] = seed(pt, pop[:32] + N256.to_bytes(32, "big"), nonce, uid, 0)
    seeds["r-is-n"] = seed(pt, N256.to_bytes(32, "big") + pop[32:], nonce, uid, 0)
    seeds["s-high"] = seed(pt, pop[:32] + b"\xff" * 32, nonce, uid, 0)
    seeds["truncated-nonce"] = seed(pt, pop, nonce, uid, 0)[:65 + 1 + 64 + 1 + 10]
    seeds["truncated-slot"] = seed(pt, pop, nonce, uid, 0)[:-1]
    seeds["empty"] = b""
    seeds["one-byte"] = b"\x41"
    for name, data in sorted(seeds.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(seeds)} seeds in {out}")


if __name__ == "__main__":
    main()
