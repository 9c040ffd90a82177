#!/usr/bin/env bash
# Writes the seed corpus of the dns_request fuzz target: a few well-formed
# queries of the fuzz zone (fuzz.example.internal), one file each, named by
# what they ask, in dns_request/. The files are committed.
set -euo pipefail
cd "$(dirname "$0")/dns_request"
python3 - <<'PY'
import struct

def name(n):
    out = b""
    for label in n.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"

def query(n, qtype, edns=None, flags=0x0100, qclass=1, opcode=0):
    flags |= opcode << 11
    arcount = 1 if edns else 0
    msg = struct.pack(">HHHHHH", 0x1234, flags, 1, 0, 0, arcount)
    msg += name(n) + struct.pack(">HH", qtype, qclass)
    if edns:
        msg += b"\0" + struct.pack(">HHIH", 41, edns, 0, 0)
    return msg

Z = "fuzz.example.internal"
cases = {
    "a-node": query("cp1." + Z, 1),
    "aaaa-node-edns": query("w1." + Z, 28, edns=4096),
    "srv-big": query("_example-big._tcp." + Z, 33),
    "srv-big-edns": query("_example-big._udp." + Z, 33, edns=1232),
    "soa-apex": query(Z, 6),
    "ns-apex-edns": query(Z, 2, edns=512),
    "any": query("cp1." + Z, 255),
    "nxdomain": query("nope." + Z, 1),
    "refused": query("example.com", 1),
    "axfr": query(Z, 252),
    "chaos": query("version.bind", 16, qclass=3),
    "notify": query(Z, 6, opcode=4),
}
for file, data in cases.items():
    with open(file, "wb") as f:
        f.write(data)
PY
