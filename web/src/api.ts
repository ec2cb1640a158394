/** REST calls (public and signed) and the browser's own Ed25519 identity. */

export class ApiError extends Error {
  constructor(
    readonly code: number,
    msg: string,
    readonly status: number,
  ) {
    super(msg);
  }
}

let clockOffset = 0; // server time - local time, ms

export async function syncClock(): Promise<void> {
  const before = Date.now();
  const { serverTime } = await publicGet<{ serverTime: number }>("/api/v3/time");
  clockOffset = serverTime - Math.round((before + Date.now()) / 2);
}

export function serverNow(): number {
  return Date.now() + clockOffset;
}

async function parse<T>(response: Response): Promise<T> {
  const text = await response.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new ApiError(-1000, `HTTP ${response.status}: ${text.slice(0, 200)}`, response.status);
  }
  if (!response.ok) {
    const err = body as { code?: number; msg?: string };
    throw new ApiError(err.code ?? -1000, err.msg ?? `HTTP ${response.status}`, response.status);
  }
  return body as T;
}

export async function publicGet<T>(path: string, params: Record<string, string | number> = {}): Promise<T> {
  const query = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();
  return parse<T>(await fetch(query ? `${path}?${query}` : path));
}

// ---------------------------------------------------------------------------------------------
// Identity: an Ed25519 key pair in IndexedDB (non-extractable unless made for a backup), with
// the account it belongs to.
// ---------------------------------------------------------------------------------------------

export interface Identity {
  name: string;
  apiKey: string;
  userId: number;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
}

const DB_NAME = "investo";
const STORE = "identity";
const ME = "me";

function openDb(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function idb<T>(mode: IDBTransactionMode, run: (store: IDBObjectStore) => IDBRequest): Promise<T> {
  const db = await openDb();
  try {
    return await new Promise<T>((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = run(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result as T);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

export async function loadIdentity(): Promise<Identity | undefined> {
  return (await idb<Identity | undefined>("readonly", (s) => s.get(ME))) ?? undefined;
}

export async function saveIdentity(identity: Identity): Promise<void> {
  await idb("readwrite", (s) => s.put(identity, ME));
}

export async function forgetIdentity(): Promise<void> {
  await idb("readwrite", (s) => s.delete(ME));
}

export const BROWSERS_THAT_WORK = "Chrome or Edge 137+, Firefox 129+ or Safari 17+";

let signingCheck: Promise<string | undefined> | undefined;

/**
 * Why this browser cannot sign (undefined if it can): it needs a secure context and
 * WebCrypto Ed25519, detected by making a throwaway key. Checked once per page.
 */
export function signingProblem(): Promise<string | undefined> {
  signingCheck ??= (async () => {
    if (!window.isSecureContext || !crypto.subtle) {
      return "Signing needs a secure context: open the exchange at http://127.0.0.1 or over HTTPS.";
    }
    try {
      await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
      return undefined;
    } catch {
      return (
        "This browser cannot make Ed25519 signing keys (WebCrypto), so it cannot sign up or trade here. " +
        `Use a browser that can: ${BROWSERS_THAT_WORK}. The market data works here as it is.`
      );
    }
  })();
  return signingCheck;
}

function base64(bytes: ArrayBuffer): string {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s);
}

async function sign(key: CryptoKey, payload: string): Promise<string> {
  return base64(await crypto.subtle.sign("Ed25519", key, new TextEncoder().encode(payload)));
}

/** A urlencoded body with timestamp, signed as sent; returns the full string to send. */
async function signedBody(key: CryptoKey, params: Record<string, string>): Promise<string> {
  const body = new URLSearchParams({ ...params, timestamp: String(serverNow()), recvWindow: "10000" }).toString();
  return `${body}&signature=${encodeURIComponent(await sign(key, body))}`;
}

/**
 * Create a key pair, register it under `name`, claim demo funds, store it. The private key
 * is non-extractable unless `backup` (then it can be exported as a PEM file, see keyfile.ts).
 */
export async function signUp(name: string, backup = false): Promise<Identity> {
  const pair = (await crypto.subtle.generateKey({ name: "Ed25519" }, backup, ["sign", "verify"])) as CryptoKeyPair;
  const raw = await crypto.subtle.exportKey("raw", pair.publicKey); // public keys stay exportable
  const body = await signedBody(pair.privateKey, { name, publicKey: base64(raw) });
  const created = await parse<{ userId: number; name: string; apiKey: string }>(
    await fetch("/api/v1/investo/users", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body,
    }),
  );
  const identity: Identity = {
    name: created.name,
    apiKey: created.apiKey,
    userId: created.userId,
    privateKey: pair.privateKey,
    publicKey: pair.publicKey,
  };
  await saveIdentity(identity);
  await signed(identity, "POST", "/api/v1/investo/demo-funds");
  return identity;
}

/** A signed request: GET/DELETE carry the signed string as the query, POST/PUT as the body. */
export async function signed<T>(
  me: Identity,
  method: "GET" | "POST" | "PUT" | "DELETE",
  path: string,
  params: Record<string, string> = {},
): Promise<T> {
  const payload = await signedBody(me.privateKey, params);
  const headers: Record<string, string> = { "X-MBX-APIKEY": me.apiKey };
  if (method === "POST" || method === "PUT") {
    headers["Content-Type"] = "application/x-www-form-urlencoded";
    return parse<T>(await fetch(path, { method, headers, body: payload }));
  }
  return parse<T>(await fetch(`${path}?${payload}`, { method, headers }));
}
