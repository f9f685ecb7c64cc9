#!/usr/bin/python3
"""An outside DKIM signer and verifier for the tests: dkimpy (Debian's python3-dkim), with
PyNaCl for Ed25519 and openssl for RSA keys.

  dkim_tool.py keygen rsa|ed25519 KEYFILE     writes the key, prints the TXT record
  dkim_tool.py sign SELECTOR DOMAIN KEYFILE rsa|ed25519 < message > signed message
  dkim_tool.py verify NAME TXT < message       prints pass/fail for the first signature,
                                               its key the TXT record at NAME (no DNS;
                                               any other name has no record)
  dkim_tool.py arc-sign SELECTOR DOMAIN KEYFILE SRVID < message > message with an ARC set
                                               (cv from the arc= of its SRVID
                                               Authentication-Results)
  dkim_tool.py arc-verify NAME TXT [NAME TXT ...] < message
                                               prints the chain's cv (pass/fail/none) and
                                               the instance of the last set
"""
import base64
import subprocess
import sys

import dkim


def keygen(kind, keyfile):
    if kind == "ed25519":
        import nacl.signing
        key = nacl.signing.SigningKey.generate()
        with open(keyfile, "wb") as f:
            f.write(base64.b64encode(bytes(key)))
        public = base64.b64encode(bytes(key.verify_key)).decode()
        print(f"v=DKIM1; k=ed25519; p={public}")
    else:
        subprocess.run(["openssl", "genrsa", "-traditional", "-out", keyfile, "2048"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "rsa", "-in", keyfile, "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
        print(f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}")


def main():
    cmd = sys.argv[1]
    if cmd == "keygen":
        keygen(sys.argv[2], sys.argv[3])
    elif cmd == "sign":
        selector, domain, keyfile, kind = sys.argv[2:6]
        message = sys.stdin.buffer.read()
        key = open(keyfile, "rb").read()
        algorithm = {"ed25519": b"ed25519-sha256", "rsa-sha1": b"rsa-sha1"}.get(kind, b"rsa-sha256")
        signature = dkim.sign(message, selector.encode(), domain.encode(), key,
                              include_headers=[b"from", b"to", b"subject"],
                              signature_algorithm=algorithm, linesep=b"\r\n")
        sys.stdout.buffer.write(signature + message)
    elif cmd == "verify":
        name, record = sys.argv[2].encode(), sys.argv[3].encode()

        def dnsfunc(asked, timeout=5):
            return record if asked.rstrip(b".").lower() == name.rstrip(b".").lower() else None

        message = sys.stdin.buffer.read()
        ok = dkim.verify(message, dnsfunc=dnsfunc)
        print("pass" if ok else "fail")
    elif cmd == "arc-sign":
        selector, domain, keyfile, srv_id = sys.argv[2:6]
        message = sys.stdin.buffer.read()
        key = open(keyfile, "rb").read()
        fields = dkim.arc_sign(message, selector.encode(), domain.encode(), key,
                               srv_id.encode(), include_headers=[b"from", b"to", b"subject"],
                               linesep=b"\r\n")
        sys.stdout.buffer.write(b"".join(fields) + message)
    elif cmd == "arc-verify":
        pairs = sys.argv[2:]
        records = {pairs[i].encode().rstrip(b".").lower(): pairs[i + 1].encode()
                   for i in range(0, len(pairs), 2)}

        def dnsfunc(asked, timeout=5):
            return records.get(asked.rstrip(b".").lower())

        message = sys.stdin.buffer.read()
        cv, results, comment = dkim.arc_verify(message, dnsfunc=dnsfunc)
        last = max((r["instance"] for r in results), default=0)
        print((cv or b"none").decode(), last, comment)
    else:
        sys.exit(f"unknown command {cmd}")


main()
