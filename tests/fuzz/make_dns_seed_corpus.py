#!/usr/bin/env python3
"""Writes seed inputs for dns_message_fuzzer into tests/fuzz/corpus/dns_message/.

Each seed is a DNS response as a server would send it: SRV answers (with and
without name compression, a CNAME in front, several records), A and AAAA
answers, an NXDOMAIN, and a truncated one.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "dns_message")


def name(dotted):
    out = b""
    for label in dotted.strip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def header(qid, flags, qd, an):
    return struct.pack(">HHHHHH", qid, flags, qd, an, 0, 0)


def question(qname, qtype):
    return name(qname) + struct.pack(">HH", qtype, 1)


def rr(owner, rtype, ttl, rdata):
    return owner + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


def srv(prio, weight, port, target):
    return struct.pack(">HHH", prio, weight, port) + target


def write(fname, data):
    with open(os.path.join(OUT, fname), "wb") as f:
        f.write(data)


def main():
    os.makedirs(OUT, exist_ok=True)
    q = "_echo._tcp.mesh.test"
    ptr_q = b"\xc0\x0c"  # the question's name
    write("srv_compressed", header(1, 0x8180, 1, 2) + question(q, 33) +
          rr(ptr_q, 33, 30, srv(10, 5, 7001, name("a.mesh.test"))) +
          rr(ptr_q, 33, 20, srv(20, 0, 7002, name("b.mesh.test"))))
    write("srv_plain", header(2, 0x8180, 1, 1) + question(q, 33) +
          rr(name(q), 33, 5, srv(1, 1, 7003, name("127.0.0.3"))))
    write("srv_cname", header(3, 0x8180, 1, 2) + question(q, 33) +
          rr(ptr_q, 5, 60, name("_real._tcp.mesh.test")) +
          rr(name("_real._tcp.mesh.test"), 33, 10, srv(0, 1, 80, name("c.mesh.test"))))
    write("a_two", header(4, 0x8180, 1, 2) + question("a.mesh.test", 1) +
          rr(b"\xc0\x0c", 1, 1, bytes([127, 0, 0, 1])) +
          rr(b"\xc0\x0c", 1, 1, bytes([127, 0, 0, 2])))
    write("aaaa_one", header(5, 0x8180, 1, 1) + question("a.mesh.test", 28) +
          rr(b"\xc0\x0c", 28, 300, bytes(15) + b"\x01"))
    write("nxdomain", header(6, 0x8183, 1, 0) + question("x.mesh.test", 1))
    full = header(7, 0x8180, 1, 1) + question(q, 33) + \
        rr(ptr_q, 33, 30, srv(10, 5, 7001, name("a.mesh.test")))
    write("srv_truncated", full[:-5])


if __name__ == "__main__":
    main()
