"""Keys and tokens minted by PyJWT (with `cryptography`), for the interop tests.

Reads a JSON spec on stdin:
  {"keys": [{"id": "k1", "alg": "RS256"}],
   "tokens": [{"id": "t1", "key": "k1", "claims": {...}, "kid": "optional", "tamper": false}]}
Writes {"jwks": {"k1": <public JWK>}, "tokens": {"t1": "<compact JWS>"}} on stdout.
"""
import base64
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


def generate(alg):
    if alg in ("RS256", "PS256", "RS384", "PS384", "RS512", "PS512"):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return private, RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    if alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        return private, ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    if alg == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
        return private, ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    if alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        return private, OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    raise SystemExit(f"unsupported alg {alg}")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main():
    spec = json.load(sys.stdin)
    now = int(time.time())
    private_keys, jwks = {}, {}
    for key in spec.get("keys", []):
        private, public = generate(key["alg"])
        public.update({"kid": key["id"], "alg": key["alg"], "use": "sig"})
        private_keys[key["id"]] = (private, key["alg"])
        jwks[key["id"]] = public
    tokens = {}
    for token in spec.get("tokens", []):
        private, alg = private_keys[token["key"]]
        claims = {"iat": now, "exp": now + 3600, **token.get("claims", {})}
        encoded = jwt.encode(claims, private, algorithm=alg, headers={"kid": token.get("kid", token["key"])})
        if token.get("tamper"):
            header, _, signature = encoded.split(".")
            forged = b64url(json.dumps({**claims, "sub": "mallory", "role": "admin"}).encode())
            encoded = ".".join([header, forged, signature])
        tokens[token["id"]] = encoded
    json.dump({"jwks": jwks, "tokens": tokens}, sys.stdout)


if __name__ == "__main__":
    main()
