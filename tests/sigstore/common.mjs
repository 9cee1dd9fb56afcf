import crypto from 'node:crypto';

export const BUNDLE_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
export const IN_TOTO = 'application/vnd.in-toto+json';
export const PREDICATE_TYPE = 'https://sigstore.dev/cosign/sign/v1';

// The key's hint in a bundle: the sha256 of its SPKI DER, as hex.
export const keyHint = (pem) =>
  crypto.createHash('sha256').update(crypto.createPublicKey(pem).export({ type: 'spki', format: 'der' })).digest('hex');
