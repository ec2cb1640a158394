/**
 * Key backup: an extractable Ed25519 private key as an unencrypted PKCS#8 PEM, the same
 * file `investo user create` writes (and ccxt takes as `secret`).
 */

/** PEM armour: base64 of `der` in lines of 64 characters between BEGIN/END `label`. */
export function toPem(der: ArrayBuffer | Uint8Array, label: string): string {
  let binary = "";
  for (const b of new Uint8Array(der)) binary += String.fromCharCode(b);
  const lines = btoa(binary).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** The private key's PKCS#8 PEM; throws if the key was made non-extractable. */
export async function privateKeyPem(key: CryptoKey): Promise<string> {
  if (!key.extractable) throw new Error("this key was made non-extractable: it cannot leave this browser");
  return toPem(await crypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}
