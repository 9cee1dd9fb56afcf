// Signs an image digest with a key and attaches the Sigstore bundle to the image as an OCI 1.1 referrer.
// The signing and the attaching are the sigstore project's libraries (@sigstore/sign, @sigstore/oci); this
// script only wires them: a key signer, an in-toto statement naming the digest, no transparency log.
//
//   node sign.mjs REGISTRY REPOSITORY DIGEST PRIVATE_KEY_PEM_FILE
// prints the attached artifact's descriptor as JSON.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { bundleToJSON } from '@sigstore/bundle';
import { attachArtifactToImage } from '@sigstore/oci';
import { DSSEBundleBuilder } from '@sigstore/sign';
import { BUNDLE_MEDIA_TYPE, IN_TOTO, PREDICATE_TYPE, keyHint } from './common.mjs';

const [registry, repository, digest, keyFile] = process.argv.slice(2);
const privateKey = crypto.createPrivateKey(fs.readFileSync(keyFile));
const publicKey = crypto.createPublicKey(privateKey).export({ type: 'spki', format: 'pem' });
const signer = {
  sign: async (data) => ({
    signature: crypto.sign('sha256', data, privateKey),
    key: { $case: 'publicKey', publicKey, hint: keyHint(publicKey) },
  }),
};
const statement = {
  _type: 'https://in-toto.io/Statement/v1',
  subject: [{ name: `${registry}/${repository}`, digest: { sha256: digest.split(':')[1] } }],
  predicateType: PREDICATE_TYPE,
  predicate: {},
};
const bundle = await new DSSEBundleBuilder({ signer, witnesses: [] }).create({
  data: Buffer.from(JSON.stringify(statement)),
  type: IN_TOTO,
});
const descriptor = await attachArtifactToImage({
  artifact: Buffer.from(JSON.stringify(bundleToJSON(bundle))),
  mediaType: BUNDLE_MEDIA_TYPE,
  imageName: `${registry}/${repository}`,
  imageDigest: digest,
  annotations: { 'dev.sigstore.bundle.content': 'dsse-envelope', 'dev.sigstore.bundle.predicateType': PREDICATE_TYPE },
  credentials: undefined, // the loopback registry takes no login
});
process.stdout.write(JSON.stringify(descriptor) + '\n');
