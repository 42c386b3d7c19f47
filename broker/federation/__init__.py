"""Portable trust between deployments: W3C Verifiable Credentials another broker imports.

- `vc`: VC 2.0 checks shared by every credential (validity, issuer, eddsa-jcs-2022 proof);
- `record`: the TrustRecordCredential a broker issues about an agent it knows, and the
  BitstringStatusListCredential that revokes it (pure);
- `prior`: how imported records become a reputation prior (pure);
- `export` / `imports`: issuing from and recording into the store.
"""
