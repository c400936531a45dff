#!/usr/bin/python3
"""Independent DKIM verification for hedwig's tests, with python3-dkim (dkimpy).

Usage: dkim_verify.py DNS_IP DNS_PORT MESSAGE_FILE

Verifies every DKIM-Signature of the message, asking the test's DNS server (and nothing else)
for the key records with dnspython. Prints one line per signature:
    <index> <d=> <s=> <a=> pass|fail
and exits 0 only when there is at least one signature and all of them pass.
"""
import re
import sys

import dkim
import dns.message
import dns.query
import dns.rdatatype


def main():
    ip, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(path, "rb") as f:
        message = f.read()

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        answer = dns.query.udp(query, ip, port=port, timeout=timeout)
        if answer.flags & dns.flags.TC:
            answer = dns.query.tcp(query, ip, port=port, timeout=timeout)
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(list(rrset.items)[0].strings)
        return None

    d = dkim.DKIM(message)
    headers = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
    if not headers:
        print("no signature")
        return 1
    ok = True
    for idx, value in enumerate(headers):
        tags = dict(
            (m.group(1), m.group(2))
            for m in re.finditer(rb"\s*([a-z]+)\s*=\s*([^;]*);?", value)
        )
        tag = lambda t: tags.get(t, b"?").strip().decode()
        try:
            good = dkim.DKIM(message).verify(idx=idx, dnsfunc=dnsfunc)
        except Exception as e:  # a verification error is a failure, with its reason
            print("error:", repr(e), file=sys.stderr)
            good = False
        ok = ok and good
        print(idx, tag(b"d"), tag(b"s"), tag(b"a"), "pass" if good else "fail")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
