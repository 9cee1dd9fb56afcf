// Verifies an image's signatures at a registry with a public key, through the sigstore project's verifier
// (@sigstore/verify): every Sigstore bundle among its OCI referrers (the referrers API, or the fallback tag
// sha256-<hex> where the API answers 404, as the distribution spec says) and every cosign-layout signature
// under the tag sha256-<hex>.sig (a simple-signing payload layer whose signature is in the layer's
// dev.cosignproject.cosign/signature annotation), each checked to name the image's own digest.
//
//   node verify.mjs REGISTRY REPOSITORY REFERENCE PUBLIC_KEY_PEM_FILE
// prints {"digest", "verified": [...], "rejected": [...]}; exit 0 only when something verified and nothing
// was rejected.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { bundleFromJSON } from '@sigstore/bundle';
import { Verifier, toSignedEntity } from '@sigstore/verify';
import { BUNDLE_MEDIA_TYPE, keyHint } from './common.mjs';

const [registry, repository, reference, keyFile] = process.argv.slice(2);
const pem = fs.readFileSync(keyFile, 'utf8');
const hint = keyHint(pem);
const publicKey = crypto.createPublicKey(pem);
const trust = {
  certificateAuthorities: [], timestampAuthorities: [], tlogs: [], ctlogs: [],
  publicKey: (wanted) => {
    if (wanted !== hint) throw new Error(`signed with another key (hint ${wanted})`);
    return { publicKey, validFor: () => true };
  },
};
// A key, no transparency log or timestamp authority: what `cosign verify --key --insecure-ignore-tlog` checks.
const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
const base = `http://${registry}/v2/${repository}`;
const ACCEPT = ['application/vnd.oci.image.index.v1+json', 'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json'].join(',');

const get = (path, init = {}) => fetch(`${base}${path}`, { headers: { Accept: ACCEPT }, ...init });
const json = async (path) => {
  const response = await get(path);
  if (!response.ok) throw new Error(`GET ${path}: HTTP ${response.status}`);
  return response.json();
};
const blob = async (digest) => {
  const response = await get(`/blobs/${digest}`);
  if (!response.ok) throw new Error(`GET blob ${digest}: HTTP ${response.status}`);
  return Buffer.from(await response.arrayBuffer());
};

const head = await get(`/manifests/${reference}`, { method: 'HEAD' });
if (!head.ok) throw new Error(`HEAD ${reference}: HTTP ${head.status}`);
const digest = head.headers.get('docker-content-digest');
const tag = digest.replace(':', '-');
const verified = [];
const rejected = [];

async function referrers() {
  const api = await get(`/referrers/${digest}`);
  if (api.ok) return (await api.json()).manifests;
  if (api.status !== 404) throw new Error(`referrers API: HTTP ${api.status}`);
  const fallback = await get(`/manifests/${tag}`);
  return fallback.ok ? (await fallback.json()).manifests : [];
}

for (const descriptor of await referrers()) {
  if (descriptor.artifactType !== BUNDLE_MEDIA_TYPE) continue;
  try {
    const manifest = await json(`/manifests/${descriptor.digest}`);
    const bundle = bundleFromJSON(JSON.parse(await blob(manifest.layers[0].digest)));
    verifier.verify(toSignedEntity(bundle));
    const statement = JSON.parse(Buffer.from(bundle.content.dsseEnvelope.payload).toString());
    const named = statement.subject.map((s) => `sha256:${s.digest.sha256}`);
    if (!named.includes(digest)) throw new Error(`statement names ${named}, not ${digest}`);
    verified.push({ kind: 'bundle', artifact: descriptor.digest });
  } catch (err) {
    rejected.push({ kind: 'bundle', artifact: descriptor.digest, error: String(err.message || err) });
  }
}

const sig = await get(`/manifests/${tag}.sig`);
if (sig.ok) {
  const manifest = await sig.json();
  for (const layer of manifest.layers) {
    const signature = layer.annotations?.['dev.cosignproject.cosign/signature'];
    if (!signature) continue;
    try {
      const payload = await blob(layer.digest);
      const named = JSON.parse(payload).critical.image['docker-manifest-digest'];
      if (named !== digest) throw new Error(`payload names ${named}, not ${digest}`);
      // cosign's layout as a message-signature bundle: the verifier checks the signature over the payload.
      const bundle = bundleFromJSON({
        mediaType: BUNDLE_MEDIA_TYPE,
        verificationMaterial: { publicKey: { hint }, tlogEntries: [], timestampVerificationData: { rfc3161Timestamps: [] } },
        messageSignature: {
          messageDigest: { algorithm: 'SHA2_256', digest: crypto.createHash('sha256').update(payload).digest('base64') },
          signature,
        },
      });
      verifier.verify(toSignedEntity(bundle, payload));
      verified.push({ kind: 'cosign', artifact: layer.digest });
    } catch (err) {
      rejected.push({ kind: 'cosign', artifact: layer.digest, error: String(err.message || err) });
    }
  }
}
process.stdout.write(JSON.stringify({ digest, verified, rejected }) + '\n');
process.exit(verified.length && !rejected.length ? 0 : 1);
