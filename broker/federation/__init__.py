"""Portable trust between deployments: W3C Verifiable Credentials another broker imports.

- `vc`: VC 2.0 checks shared by every credential (validity, issuer, eddsa-jcs-2022 proof);
- `record`: the TrustRecordCredential a broker issues about an agent it knows, and the
  BitstringStatusListCredential that revokes it (pure);
- `export` / `imports`: issuing from and recording into the store.

How imported records count in a score is scoring's: broker/core/scoring/prior.py.
"""
