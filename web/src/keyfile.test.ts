import { describe, expect, it } from "vitest";
import { privateKeyPem, toPem } from "./keyfile";

const hex = (s: string) => Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));

describe("key backup", () => {
  it("armours DER exactly as Python's cryptography writes PKCS#8 PEM", () => {
    // Ed25519PrivateKey.from_private_bytes(bytes(range(32))).private_bytes(PEM, PKCS8, NoEncryption())
    const der = hex("302e020100300506032b657004220420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    expect(toPem(der, "PRIVATE KEY")).toBe(
      "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n-----END PRIVATE KEY-----\n",
    );
    expect(toPem(new Uint8Array(100), "X").split("\n").map((l) => l.length)).toEqual([17, 64, 64, 8, 15, 0]);
  });

  it("exports an extractable key as a PEM that loads back as the same Ed25519 key", async () => {
    const pair = (await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"])) as CryptoKeyPair;
    const pem = await privateKeyPem(pair.privateKey);
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END PRIVATE KEY-----\n$/);
    const body = pem.split("\n").slice(1, -2).join("");
    const der = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
    const loaded = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
    const message = new TextEncoder().encode("symbol=TATAINR&timestamp=1");
    const signature = await crypto.subtle.sign("Ed25519", loaded, message);
    expect(await crypto.subtle.verify("Ed25519", pair.publicKey, signature, message)).toBe(true);
  });

  it("refuses a non-extractable key", async () => {
    const pair = (await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"])) as CryptoKeyPair;
    await expect(privateKeyPem(pair.privateKey)).rejects.toThrow(/non-extractable/);
  });
});
