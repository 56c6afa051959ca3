#!/usr/bin/env python3
"""A stand-in for AWS KMS's JSON API, for tests: no real KMS is reachable
from the test machines.  It speaks HTTPS (the certificate given), checks
every request's SigV4 signature with the secret given (its own
implementation of the algorithm, so a signing mistake on the client's side
shows), and implements two operations the way KMS documents them:

  TrentService.GenerateDataKey  {KeyId, KeySpec "AES_256" | NumberOfBytes}
      -> {CiphertextBlob, Plaintext (base64), KeyId (the key's ARN)}
  TrentService.Decrypt          {CiphertextBlob, KeyId (optional)}
      -> {Plaintext, KeyId, EncryptionAlgorithm}

Errors are KMS's: HTTP 400 and {"__type": "...", "message": "..."}, e.g.
InvalidSignatureException, UnrecognizedClientException, NotFoundException,
InvalidCiphertextException, IncorrectKeyException.

Its keys are its own: a CiphertextBlob is the key's index, a nonce, the
data XORed with an HMAC-SHA256 keystream and an HMAC tag, under a secret
made at start (not AES, not KMS's format: the client treats blobs as
opaque).  Each --key-id is a key, known by its ARN or "alias/NAME" given as
--alias NAME=ARN.

usage: kms_standin.py --cert C --key K --access-key A --secret S
                      --region R --key-id ARN [--key-id ARN2]
                      [--alias NAME=ARN] [--delay-ms N]
Prints "PORT n" once it listens on 127.0.0.1 (a free port).
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

ARGS = None
SECRET = os.urandom(32)


def sha256_hex(b):
    return hashlib.sha256(b).hexdigest()


def hmac256(key, msg):
    return hmac.new(key, msg.encode() if isinstance(msg, str) else msg,
                    hashlib.sha256).digest()


def canonical_query(q):
    if not q:
        return ""
    parts = []
    for p in q.split("&"):
        k, _, v = p.partition("=")
        parts.append((quote(unquote(k), safe="-_.~"),
                      quote(unquote(v), safe="-_.~")))
    return "&".join(k + "=" + v for k, v in sorted(parts))


def expected_signature(handler, body, signed, scope_date, region, service,
                       amz_date):
    path, _, query = handler.path.partition("?")
    lines = []
    for name in signed.split(";"):
        values = handler.headers.get_all(name) or []
        value = ",".join(" ".join(v.strip().split()) for v in values)
        lines.append(name + ":" + value + "\n")
    creq = "\n".join([handler.command, quote(path, safe="/-_.~"),
                      canonical_query(query), "".join(lines), signed,
                      sha256_hex(body)])
    scope = "/".join([scope_date, region, service, "aws4_request"])
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     sha256_hex(creq.encode())])
    k = hmac256(("AWS4" + ARGS.secret).encode(), scope_date)
    for part in (region, service, "aws4_request"):
        k = hmac256(k, part)
    return hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()


def keystream(nonce, n):
    out = b""
    i = 0
    while len(out) < n:
        out += hmac256(SECRET, b"ks" + nonce + bytes([i]))
        i += 1
    return out[:n]


def seal(index, data):
    nonce = os.urandom(16)
    ct = bytes(a ^ b for a, b in zip(data, keystream(nonce, len(data))))
    head = bytes([1, index]) + nonce
    return head + ct + hmac256(SECRET, b"tag" + head + ct)[:16]


def unseal(blob):
    if len(blob) < 2 + 16 + 16 or blob[0] != 1 or blob[1] >= len(ARGS.key_id):
        return None, None
    head, ct, tag = blob[:18], blob[18:-16], blob[-16:]
    if not hmac.compare_digest(tag, hmac256(SECRET, b"tag" + head + ct)[:16]):
        return None, None
    data = bytes(a ^ b for a, b in zip(ct, keystream(blob[2:18], len(ct))))
    return blob[1], data


def find_key(key_id):
    if key_id in ARGS.key_id:
        return ARGS.key_id.index(key_id)
    for a in ARGS.alias:
        name, _, arn = a.partition("=")
        if key_id == "alias/" + name and arn in ARGS.key_id:
            return ARGS.key_id.index(arn)
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("kms_standin: " + (fmt % args) + "\n")

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", base64.b16encode(
            os.urandom(8)).decode())
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, kind, message):
        self.reply(status, {"__type": kind, "message": message})

    def authenticate(self, body):
        auth = self.headers.get("Authorization", "")
        amz_date = self.headers.get("X-Amz-Date", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return "MissingAuthenticationTokenException", \
                "Request is missing Authentication Token"
        fields = {}
        for part in auth[len("AWS4-HMAC-SHA256 "):].split(","):
            k, _, v = part.strip().partition("=")
            fields[k] = v
        cred = fields.get("Credential", "").split("/")
        if len(cred) != 5 or cred[4] != "aws4_request":
            return "IncompleteSignatureException", "bad Credential"
        access, date, region, service = cred[:4]
        if access != ARGS.access_key:
            return "UnrecognizedClientException", \
                "The security token included in the request is invalid."
        if region != ARGS.region or service != "kms" \
                or not amz_date.startswith(date):
            return "InvalidSignatureException", \
                "Credential should be scoped to a valid region, service kms"
        signed = fields.get("SignedHeaders", "")
        if "host" not in signed.split(";") \
                or "x-amz-date" not in signed.split(";"):
            return "InvalidSignatureException", \
                "host and x-amz-date must be signed"
        want = expected_signature(self, body, signed, date, region, service,
                                  amz_date)
        if not hmac.compare_digest(want, fields.get("Signature", "")):
            return "InvalidSignatureException", (
                "The request signature we calculated does not match the "
                "signature you provided. Check your AWS Secret Access Key "
                "and signing method. Consult the service documentation for "
                "details.")
        if ARGS.session_token and \
                self.headers.get("X-Amz-Security-Token") != \
                ARGS.session_token:
            return "UnrecognizedClientException", \
                "The security token included in the request is invalid."
        return None, None

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        # before any delay: a spec waits for this line to know a request
        # is in flight
        sys.stderr.write("kms_standin: received %s\n"
                         % self.headers.get("X-Amz-Target", "?"))
        sys.stderr.flush()
        if ARGS.delay_ms:
            time.sleep(ARGS.delay_ms / 1000.0)
        kind, message = self.authenticate(body)
        if kind:
            return self.error(400, kind, message)
        if self.headers.get("Content-Type") != "application/x-amz-json-1.1":
            return self.error(400, "SerializationException",
                              "bad content type")
        try:
            req = json.loads(body)
        except ValueError:
            return self.error(400, "SerializationException", "bad JSON")
        target = self.headers.get("X-Amz-Target", "")
        if target == "TrentService.GenerateDataKey":
            index = find_key(req.get("KeyId", ""))
            if index is None:
                return self.error(400, "NotFoundException",
                                  "Key '%s' does not exist" % req.get("KeyId"))
            size = {"AES_256": 32, "AES_128": 16}.get(req.get("KeySpec"),
                                                       req.get("NumberOfBytes"))
            if not isinstance(size, int) or not 1 <= size <= 1024:
                return self.error(400, "ValidationException", "bad KeySpec")
            data = os.urandom(size)
            return self.reply(200, {
                "CiphertextBlob": base64.b64encode(seal(index, data)).decode(),
                "Plaintext": base64.b64encode(data).decode(),
                "KeyId": ARGS.key_id[index],
            })
        if target == "TrentService.Decrypt":
            try:
                blob = base64.b64decode(req.get("CiphertextBlob", ""),
                                        validate=True)
            except ValueError:
                blob = b""
            index, data = unseal(blob)
            if index is None:
                return self.error(400, "InvalidCiphertextException", "")
            if "KeyId" in req and find_key(req["KeyId"]) != index:
                return self.error(400, "IncorrectKeyException",
                                  "The key ID in the request does not "
                                  "identify a CMK that can perform this "
                                  "operation.")
            return self.reply(200, {
                "Plaintext": base64.b64encode(data).decode(),
                "KeyId": ARGS.key_id[index],
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            })
        return self.error(400, "UnknownOperationException", "")


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--session-token")
    p.add_argument("--region", required=True)
    p.add_argument("--key-id", action="append", required=True)
    p.add_argument("--alias", action="append", default=[])
    p.add_argument("--delay-ms", type=int, default=0)
    ARGS = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(ARGS.cert, ARGS.key)
    # the handshake in the handler's thread, not in accept: a client that
    # stalls or gives up (an untrusted certificate) holds up no one
    server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                    do_handshake_on_connect=False)
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
