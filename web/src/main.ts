import "./style.css";
import {
  CandlestickSeries,
  ColorType,
  HistogramSeries,
  createChart,
  type IChartApi,
  type ISeriesApi,
  type UTCTimestamp,
} from "lightweight-charts";
import {
  ApiError,
  type Identity,
  forgetIdentity,
  loadIdentity,
  publicGet,
  signUp,
  signed,
  signingProblem,
  syncClock,
} from "./api";
import { type AccountState, type Balance, type OpenOrder, type UserEvent, applyEvent, fromSnapshot } from "./account";
import { type Filters, trim, validateOrder } from "./decimal";
import { type HistoryState, type OrderRow, applyToHistory, averagePrice, historyFromRows } from "./history";
import { privateKeyPem } from "./keyfile";
import { BookSync, type DepthDiff, type DepthSnapshot, type SyncResult } from "./orderbook";
import { type ConnState, Stream, UserStream } from "./stream";

// ---------------------------------------------------------------------------------------------
// Types of the API's answers (only the fields used here)
// ---------------------------------------------------------------------------------------------

interface SymbolInfo {
  symbol: string;
  baseAsset: string;
  quoteAsset: string;
  filters: Record<string, string>[];
}
interface Market {
  symbol: string;
  base: string;
  quote: string;
  filters: Filters;
  priceDecimals: number;
  qtyDecimals: number;
}
interface Ticker {
  c: string; // last
  p: string; // change
  P: string; // change %
  h: string;
  l: string;
  v: string;
  q: string;
}
interface TradeMsg {
  t: number;
  p: string;
  q: string;
  T: number;
  m: boolean; // buyer is maker: the aggressor sold
}
interface KlineMsg {
  k: { t: number; o: string; h: string; l: string; c: string; v: string; i: string };
}

const INTERVALS = ["1m", "3m", "5m", "15m", "30m", "1h", "4h", "1d"];
const BOOK_DEPTH = 12;
const TAPE_LENGTH = 40;
const HISTORY_ROWS = 200; // the latest orders asked of allOrders (open ones included), for the history

// ---------------------------------------------------------------------------------------------
// Page skeleton
// ---------------------------------------------------------------------------------------------

const app = document.querySelector<HTMLDivElement>("#app")!;
app.innerHTML = `
<header class="top">
  <div class="brand">Investo</div>
  <select id="market" aria-label="Market"></select>
  <div class="stats">
    <div><span class="label">Last</span><span id="last" class="big">–</span></div>
    <div><span class="label">24h change</span><span id="change">–</span></div>
    <div><span class="label">24h high</span><span id="high">–</span></div>
    <div><span class="label">24h low</span><span id="low">–</span></div>
    <div><span class="label">24h volume</span><span id="volume">–</span></div>
  </div>
  <div id="conn" class="conn connecting" title="Market data connection">connecting</div>
</header>
<main class="grid">
  <section class="panel chart-panel">
    <div class="panel-head"><span>Chart</span><div id="intervals" class="intervals"></div></div>
    <div id="chart" class="chart"></div>
  </section>
  <section class="panel book-panel">
    <div class="panel-head"><span>Order book</span><span id="book-state" class="muted"></span></div>
    <div class="book-cols muted"><span>Price</span><span>Qty</span><span>Total</span></div>
    <div id="asks" class="book-side"></div>
    <div id="spread" class="spread">–</div>
    <div id="bids" class="book-side"></div>
  </section>
  <section class="panel tape-panel">
    <div class="panel-head"><span>Trades</span></div>
    <div class="book-cols muted"><span>Price</span><span>Qty</span><span>Time</span></div>
    <div id="tape" class="tape"></div>
  </section>
  <section class="panel order-panel">
    <div class="panel-head"><span>Trade</span><span id="who" class="muted"></span></div>
    <div id="account-box"></div>
    <form id="order-form" class="order-form" autocomplete="off">
      <div class="sides">
        <button type="button" class="side buy active" data-side="BUY">Buy</button>
        <button type="button" class="side sell" data-side="SELL">Sell</button>
      </div>
      <div class="types">
        <label><input type="radio" name="type" value="LIMIT" checked /> Limit</label>
        <label><input type="radio" name="type" value="MARKET" /> Market</label>
      </div>
      <label class="field" id="price-field">Price <input id="price" name="price" inputmode="decimal" /></label>
      <label class="field">Quantity <input id="qty" name="qty" inputmode="decimal" /></label>
      <div class="options" id="limit-options">
        <label><input type="checkbox" id="post-only" /> Post-only</label>
        <label><input type="checkbox" id="ioc" /> IOC</label>
      </div>
      <div id="estimate" class="estimate muted"></div>
      <div id="order-problems" class="problems"></div>
      <button type="submit" id="submit-order" class="submit buy">Buy</button>
      <div id="order-result" class="result"></div>
    </form>
  </section>
  <section class="panel orders-panel">
    <div class="panel-head"><span>Open orders</span><button id="cancel-all" class="link" type="button">Cancel all</button></div>
    <table class="orders"><thead><tr><th>Side</th><th>Price</th><th>Qty</th><th>Filled</th><th></th></tr></thead>
    <tbody id="open-orders"></tbody></table>
  </section>
  <section class="panel history-panel">
    <div class="panel-head"><span>Order history</span></div>
    <table class="orders"><thead><tr><th>Time</th><th>Side</th><th>Price</th><th>Filled / Qty</th><th>Avg price</th><th>Status</th></tr></thead>
    <tbody id="order-history"></tbody></table>
  </section>
  <section class="panel balances-panel">
    <div class="panel-head"><span>Balances</span></div>
    <table class="orders"><thead><tr><th>Asset</th><th>Free</th><th>Locked</th></tr></thead>
    <tbody id="balances"></tbody></table>
  </section>
  <section class="panel fills-panel">
    <div class="panel-head"><span>My fills</span></div>
    <table class="orders"><thead><tr><th>Market</th><th>Side</th><th>Price</th><th>Qty</th><th>Fee</th><th>Time</th></tr></thead>
    <tbody id="fills"></tbody></table>
  </section>
</main>
<footer class="foot muted">
  Demo exchange: play money only. Charts by
  <a href="https://www.tradingview.com/" target="_blank" rel="noopener">TradingView Lightweight Charts™</a>.
</footer>`;

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

let markets: Market[] = [];
let market: Market;
let interval = localStorage.getItem("investo.interval") ?? "1m";
let stream: Stream | undefined;
const book = new BookSync();
let snapshotInFlight = false;
let generation = 0; // bumps on market change: late answers of the old market are ignored
let me: Identity | undefined;
let side: "BUY" | "SELL" = "BUY";
let fees = { maker: 0.001, taker: 0.002 };
const NO_ACCOUNT: AccountState = { symbol: "", orders: [], balances: [], fills: [] };
let account = NO_ACCOUNT;
let history: HistoryState = { symbol: "", orders: [] };
let userStream: UserStream | undefined;
let cannotSign: string | undefined; // why this browser cannot sign, if it cannot

function filtersOf(info: SymbolInfo): Filters {
  const by = (t: string) => info.filters.find((f) => f.filterType === t) ?? {};
  const price = by("PRICE_FILTER");
  const lot = by("LOT_SIZE");
  const notional = by("NOTIONAL");
  return {
    tickSize: price.tickSize,
    minPrice: price.minPrice,
    maxPrice: price.maxPrice,
    stepSize: lot.stepSize,
    minQty: lot.minQty,
    maxQty: lot.maxQty,
    minNotional: notional.minNotional ?? "0",
  };
}

const decimalsOf = (step: string) => (trim(step).split(".")[1] ?? "").length;
const fmtPrice = (p: string | number) => Number(p).toFixed(market.priceDecimals);
const fmtQty = (q: string | number) => Number(q).toFixed(market.qtyDecimals);
const fmtNum = (n: string | number, d = 2) =>
  Number(n).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });

// ---------------------------------------------------------------------------------------------
// Chart
// ---------------------------------------------------------------------------------------------

let chart: IChartApi;
let candles: ISeriesApi<"Candlestick">;
let volumes: ISeriesApi<"Histogram">;

function setupChart(): void {
  const el = $("chart");
  chart = createChart(el, {
    autoSize: true,
    layout: {
      background: { type: ColorType.Solid, color: "#12161c" },
      textColor: "#9aa4b2",
      attributionLogo: true,
    },
    grid: { vertLines: { color: "#1e242d" }, horzLines: { color: "#1e242d" } },
    timeScale: { timeVisible: true, secondsVisible: false, borderColor: "#2a313c" },
    rightPriceScale: { borderColor: "#2a313c" },
    crosshair: { mode: 0 },
  });
  candles = chart.addSeries(CandlestickSeries, {
    upColor: "#16c784",
    downColor: "#ea3943",
    borderVisible: false,
    wickUpColor: "#16c784",
    wickDownColor: "#ea3943",
  });
  volumes = chart.addSeries(HistogramSeries, { priceFormat: { type: "volume" }, priceScaleId: "" });
  volumes.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.25 } });

  const bar = $("intervals");
  for (const i of INTERVALS) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = i;
    b.dataset.interval = i;
    b.className = i === interval ? "active" : "";
    b.onclick = () => {
      interval = i;
      localStorage.setItem("investo.interval", i);
      for (const other of bar.querySelectorAll("button")) other.classList.toggle("active", other === b);
      connect();
    };
    bar.appendChild(b);
  }
}

function candle(t: number, o: string, h: string, l: string, c: string, v: string) {
  const time = Math.floor(t / 1000) as UTCTimestamp;
  const up = Number(c) >= Number(o);
  return {
    bar: { time, open: Number(o), high: Number(h), low: Number(l), close: Number(c) },
    vol: { time, value: Number(v), color: up ? "rgba(22,199,132,0.45)" : "rgba(234,57,67,0.45)" },
  };
}

async function loadKlines(gen: number): Promise<void> {
  const rows = await publicGet<[number, string, string, string, string, string][]>("/api/v3/klines", {
    symbol: market.symbol,
    interval,
    limit: 500,
  });
  if (gen !== generation) return;
  const cs = rows.map((r) => candle(r[0], r[1], r[2], r[3], r[4], r[5]));
  candles.applyOptions({
    priceFormat: { type: "price", precision: market.priceDecimals, minMove: Number(market.filters.tickSize) },
  });
  candles.setData(cs.map((c) => c.bar));
  volumes.setData(cs.map((c) => c.vol));
}

function onKline(msg: KlineMsg): void {
  const k = msg.k;
  if (k.i !== interval) return;
  const c = candle(k.t, k.o, k.h, k.l, k.c, k.v);
  try {
    candles.update(c.bar);
    volumes.update(c.vol);
  } catch {
    // an update older than the last bar (after a reload race): ignore
  }
}

// ---------------------------------------------------------------------------------------------
// Header (24h ticker)
// ---------------------------------------------------------------------------------------------

function showTicker(t: Ticker): void {
  $("last").textContent = fmtPrice(t.c);
  const change = $("change");
  const pct = Number(t.P);
  change.textContent = `${Number(t.p) >= 0 ? "+" : ""}${fmtPrice(t.p)} (${pct >= 0 ? "+" : ""}${pct.toFixed(2)}%)`;
  change.className = Number(t.p) > 0 ? "up" : Number(t.p) < 0 ? "down" : "";
  $("last").className = `big ${change.className}`;
  $("high").textContent = fmtPrice(t.h);
  $("low").textContent = fmtPrice(t.l);
  $("volume").textContent = `${fmtNum(t.v, market.qtyDecimals)} ${market.base}`;
  document.title = `${fmtPrice(t.c)} ${market.symbol} · Investo`;
}

async function loadTicker(gen: number): Promise<void> {
  const t = await publicGet<Record<string, string>>("/api/v3/ticker/24hr", { symbol: market.symbol });
  if (gen !== generation) return;
  showTicker({
    c: t.lastPrice,
    p: t.priceChange,
    P: t.priceChangePercent,
    h: t.highPrice,
    l: t.lowPrice,
    v: t.volume,
    q: t.quoteVolume,
  });
}

// ---------------------------------------------------------------------------------------------
// Order book
// ---------------------------------------------------------------------------------------------

let bookDirty = false;

async function fetchSnapshot(gen: number): Promise<void> {
  if (snapshotInFlight) return;
  snapshotInFlight = true;
  $("book-state").textContent = "syncing…";
  try {
    for (let attempt = 0; attempt < 10; attempt++) {
      const snap = await publicGet<DepthSnapshot>("/api/v3/depth", { symbol: market.symbol, limit: 1000 });
      if (gen !== generation) return;
      const result = book.onSnapshot(snap);
      if (result === "applied") break;
      await new Promise((r) => setTimeout(r, 100 * (attempt + 1)));
    }
  } finally {
    snapshotInFlight = false;
  }
  if (book.state === "buffering" && gen === generation) {
    setTimeout(() => void fetchSnapshot(gen), 500); // a gap while applying: try again
  }
  renderBook();
}

function onDepth(diff: DepthDiff): void {
  const result: SyncResult = book.onDiff(diff);
  if (result === "resync") void fetchSnapshot(generation);
  bookDirty = true;
}

function renderSide(el: HTMLElement, rows: ReturnType<BookSync["levels"]>["bids"], cls: string, max: number) {
  const html = rows.map((r) => {
    const width = max > 0 ? (100 * r.cumulative) / max : 0;
    return `<div class="lvl ${cls}" data-price="${fmtPrice(r.price)}" style="--depth:${width.toFixed(1)}%">
      <span class="p">${fmtPrice(r.price)}</span><span>${fmtQty(r.qty)}</span><span class="muted">${fmtQty(r.cumulative)}</span></div>`;
  });
  el.innerHTML = html.join("");
}

function renderBook(): void {
  bookDirty = false;
  const { bids, asks } = book.levels(BOOK_DEPTH);
  const max = Math.max(bids.at(-1)?.cumulative ?? 0, asks.at(-1)?.cumulative ?? 0);
  renderSide($("asks"), [...asks].reverse(), "ask", max);
  renderSide($("bids"), bids, "bid", max);
  const bid = book.bestBid();
  const ask = book.bestAsk();
  if (bid !== undefined && ask !== undefined) {
    const spread = ask - bid;
    $("spread").textContent = `Spread ${fmtPrice(spread)} (${((100 * spread) / ask).toFixed(3)}%)`;
  } else $("spread").textContent = "–";
  $("book-state").textContent = book.state === "synced" ? `#${book.lastUpdateId}` : "syncing…";
  $("book-state").dataset.updateId = String(book.lastUpdateId);
}

function onBookClick(event: MouseEvent): void {
  const row = (event.target as HTMLElement).closest<HTMLElement>(".lvl");
  if (!row?.dataset.price) return;
  setType("LIMIT");
  $<HTMLInputElement>("price").value = row.dataset.price;
  // clicking an ask means you want to buy there, a bid: sell there
  setSide(row.classList.contains("ask") ? "BUY" : "SELL");
  $<HTMLInputElement>("qty").focus();
  updateEstimate();
}

// ---------------------------------------------------------------------------------------------
// Trades tape
// ---------------------------------------------------------------------------------------------

function addTrades(trades: TradeMsg[]): void {
  const tape = $("tape");
  const html = trades
    .map((t) => {
      const cls = t.m ? "down" : "up"; // buyer was maker: a seller took the bid
      const time = new Date(t.T).toLocaleTimeString("en-GB", { hour12: false });
      return `<div class="row ${cls}" data-id="${t.t}"><span>${fmtPrice(t.p)}</span><span>${fmtQty(t.q)}</span><span class="muted">${time}</span></div>`;
    })
    .join("");
  tape.insertAdjacentHTML("afterbegin", html);
  while (tape.children.length > TAPE_LENGTH) tape.lastElementChild!.remove();
}

async function loadTrades(gen: number): Promise<void> {
  const rows = await publicGet<{ id: number; price: string; qty: string; time: number; isBuyerMaker: boolean }[]>(
    "/api/v3/trades",
    { symbol: market.symbol, limit: TAPE_LENGTH },
  );
  if (gen !== generation) return;
  $("tape").innerHTML = "";
  addTrades(rows.reverse().map((r) => ({ t: r.id, p: r.price, q: r.qty, T: r.time, m: r.isBuyerMaker })));
}

// ---------------------------------------------------------------------------------------------
// Connection: one combined stream per market and interval
// ---------------------------------------------------------------------------------------------

function setConn(state: ConnState): void {
  const el = $("conn");
  el.className = `conn ${state}`;
  el.textContent = state;
}

function connect(): void {
  stream?.close();
  generation += 1;
  const gen = generation;
  book.reset();
  renderBook();
  const s = market.symbol.toLowerCase();
  stream = new Stream([`${s}@depth`, `${s}@trade`, `${s}@kline_${interval}`, `${s}@ticker`], {
    onState: setConn,
    onOpen: () => {
      // (re)connected: every continuity-dependent view starts again from REST
      book.reset();
      void fetchSnapshot(gen).catch(reportError);
      void loadKlines(gen).catch(reportError);
      void loadTrades(gen).catch(reportError);
      void loadTicker(gen).catch(reportError);
    },
    onMessage: (name, data) => {
      if (gen !== generation) return;
      if (name.endsWith("@depth")) onDepth(data as DepthDiff);
      else if (name.endsWith("@trade")) addTrades([data as TradeMsg]);
      else if (name.includes("@kline_")) onKline(data as KlineMsg);
      else if (name.endsWith("@ticker")) showTicker(data as Ticker);
    },
  });
}

function reportError(error: unknown): void {
  console.warn("investo:", error);
}

// ---------------------------------------------------------------------------------------------
// Account: sign up, order entry, open orders, balances
// ---------------------------------------------------------------------------------------------

const BACKUP_WARNING =
  "Anyone with the backup file can trade and spend as you: keep it as secret as a password. " +
  "An exportable key can also be read by scripts running on this page.";

function renderAccountBox(): void {
  const box = $("account-box");
  if (me) {
    $("who").textContent = me.name;
    const key = me.privateKey.extractable
      ? `<div class="key-box"><button type="button" class="link" id="export-key">export key backup</button>
          <span class="muted">(${me.name}.pem, with API key <code id="me-api-key">${me.apiKey}</code>)</span>
          <div class="warning">${BACKUP_WARNING}</div></div>`
      : `<div class="key-box muted" id="key-not-exportable">This browser's key cannot be exported: it was made
          non-extractable at sign-up, so it never leaves this browser.</div>`;
    box.innerHTML = `<div class="signed-in">Signed in as <b id="me-name">${me.name}</b>
      <button type="button" class="link" id="sign-out">forget this browser</button></div>${key}`;
    $("sign-out").onclick = () => void forgetBrowser();
    document.getElementById("export-key")?.addEventListener("click", () => void exportKey());
    $("order-form").classList.remove("disabled");
    return;
  }
  $("who").textContent = "";
  $("order-form").classList.add("disabled");
  box.innerHTML = cannotSign
    ? `<div class="problems key-box" id="signup-unsupported">${cannotSign}</div>`
    : `<form id="signup" class="signup">
        <div class="muted">Create a demo account: a signing key is made in this browser and never leaves it
          (unless you ask for a backup).</div>
        <input id="signup-name" placeholder="name (a-z 0-9 _ - .)" maxlength="64" required />
        <label class="muted"><input type="checkbox" id="signup-backup" /> make a key I can back up</label>
        <div id="backup-warning" class="warning" hidden>The key will be exportable as a PEM file. ${BACKUP_WARNING}</div>
        <button type="submit" id="signup-button" class="submit">Sign up &amp; get demo funds</button>
        <div id="signup-error" class="problems"></div>
      </form>`;
  if (cannotSign) return;
  const backup = $<HTMLInputElement>("signup-backup");
  backup.onchange = () => ($("backup-warning").hidden = !backup.checked);
  $("signup").onsubmit = async (e) => {
    e.preventDefault();
    const name = $<HTMLInputElement>("signup-name").value.trim();
    $("signup-error").textContent = "";
    $<HTMLButtonElement>("signup-button").disabled = true;
    try {
      me = await signUp(name, backup.checked);
      renderAccountBox();
      startUserStream();
    } catch (error) {
      $("signup-error").textContent = describe(error);
    } finally {
      const button = document.getElementById("signup-button") as HTMLButtonElement | null;
      if (button) button.disabled = false;
    }
  };
}

/** Download the private key as `<name>.pem` (PKCS#8, as `investo user create` writes it). */
async function exportKey(): Promise<void> {
  if (!me) return;
  const pem = await privateKeyPem(me.privateKey);
  const url = URL.createObjectURL(new Blob([pem], { type: "application/x-pem-file" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = `${me.name}.pem`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Close the user data stream's listen key on the server, then delete the key from IndexedDB. */
async function forgetBrowser(): Promise<void> {
  const who = me;
  if (!who || !confirm("Forget this browser's key? The account cannot be used from here again.")) return;
  const known = userStream?.listenKey;
  stopUserStream(); // first: a closed key would otherwise make the stream ask for a new one
  try {
    // one live key per user: if the stream had none yet, POST names the one it may be getting
    const listenKey = known ?? (await signed<{ listenKey: string }>(who, "POST", "/api/v3/userDataStream")).listenKey;
    await signed(who, "DELETE", "/api/v3/userDataStream", { listenKey });
  } catch (error) {
    const gone = error instanceof ApiError && error.code === -1125; // already closed or expired
    const why = `Could not close the user data stream (${describe(error)}). Forget this browser's key anyway?`;
    if (!gone && !confirm(why)) {
      startUserStream();
      return;
    }
  }
  await forgetIdentity();
  me = undefined;
  account = { ...NO_ACCOUNT, symbol: market.symbol };
  history = { symbol: market.symbol, orders: [] };
  renderAccountBox();
  renderAccount();
}

function describe(error: unknown): string {
  if (error instanceof ApiError) return `${error.message} (code ${error.code})`;
  if (error instanceof Error) return error.message;
  return String(error);
}

function orderType(): "LIMIT" | "MARKET" {
  return document.querySelector<HTMLInputElement>('input[name="type"]:checked')!.value as "LIMIT" | "MARKET";
}

function setType(type: "LIMIT" | "MARKET"): void {
  document.querySelector<HTMLInputElement>(`input[name="type"][value="${type}"]`)!.checked = true;
  $("price-field").style.display = type === "LIMIT" ? "" : "none";
  $("limit-options").style.display = type === "LIMIT" ? "" : "none";
  updateEstimate();
}

function setSide(s: "BUY" | "SELL"): void {
  side = s;
  for (const b of document.querySelectorAll<HTMLButtonElement>(".side")) {
    b.classList.toggle("active", b.dataset.side === s);
  }
  const submit = $<HTMLButtonElement>("submit-order");
  submit.textContent = `${s === "BUY" ? "Buy" : "Sell"} ${market?.base ?? ""}`;
  submit.className = `submit ${s === "BUY" ? "buy" : "sell"}`;
  updateEstimate();
}

function updateEstimate(): void {
  if (!market) return;
  const type = orderType();
  const qty = Number($<HTMLInputElement>("qty").value);
  const price =
    type === "LIMIT"
      ? Number($<HTMLInputElement>("price").value)
      : ((side === "BUY" ? book.bestAsk() : book.bestBid()) ?? 0);
  const postOnly = $<HTMLInputElement>("post-only").checked;
  const rate = type === "LIMIT" && postOnly ? fees.maker : fees.taker;
  const cost = price * qty;
  const est = $("estimate");
  if (!(cost > 0)) {
    est.textContent = "";
    return;
  }
  const fee = cost * rate;
  const approx = type === "MARKET" ? "≈ " : "";
  est.textContent = `${side === "BUY" ? "Cost" : "Proceeds"} ${approx}${fmtNum(cost)} ${market.quote} · fee up to ${fmtNum(fee)} ${market.quote} (${(rate * 100).toFixed(2)}%)`;
  const quote = account.balances.find((b) => b.asset === (side === "BUY" ? market.quote : market.base));
  if (quote) est.textContent += ` · available ${fmtNum(quote.free, side === "BUY" ? 2 : market.qtyDecimals)}`;
}

async function submitOrder(e: Event): Promise<void> {
  e.preventDefault();
  if (!me) return;
  const type = orderType();
  const price = $<HTMLInputElement>("price").value.trim();
  const qty = $<HTMLInputElement>("qty").value.trim();
  const problems = validateOrder(market.filters, type, price, qty);
  $("order-problems").innerHTML = problems.map((p) => `<div>${p}</div>`).join("");
  $("order-result").textContent = "";
  if (problems.length) return;
  const params: Record<string, string> = { symbol: market.symbol, side, quantity: qty, newOrderRespType: "FULL" };
  if (type === "LIMIT") {
    params.price = price;
    if ($<HTMLInputElement>("post-only").checked) params.type = "LIMIT_MAKER";
    else {
      params.type = "LIMIT";
      params.timeInForce = $<HTMLInputElement>("ioc").checked ? "IOC" : "GTC";
    }
  } else params.type = "MARKET";
  const button = $<HTMLButtonElement>("submit-order");
  button.disabled = true;
  try {
    const r = await signed<{ orderId: number; status: string; executedQty: string }>(me, "POST", "/api/v3/order", params);
    $("order-result").className = "result ok";
    $("order-result").textContent = `Order ${r.orderId}: ${r.status.toLowerCase().replace("_", " ")}, filled ${fmtQty(r.executedQty)}`;
  } catch (error) {
    $("order-result").className = "result error";
    $("order-result").textContent = describe(error);
  } finally {
    button.disabled = false;
  }
}

async function cancel(orderId?: number): Promise<void> {
  if (!me) return;
  try {
    if (orderId === undefined) await signed(me, "DELETE", "/api/v3/openOrders", { symbol: market.symbol });
    else await signed(me, "DELETE", "/api/v3/order", { symbol: market.symbol, orderId: String(orderId) });
  } catch (error) {
    $("order-result").className = "result error";
    $("order-result").textContent = describe(error);
  }
}

// Open orders, balances and fills follow the user data stream; REST gives the state at each
// (re)connection and market change. Events arriving while a REST refresh is in flight are
// kept and re-applied on top of its answer, so an older answer cannot undo them.
let refreshSeq = 0;
let inFlight = 0;
let sinceRefresh: UserEvent[] = [];

async function refreshAccount(): Promise<void> {
  if (!me) return;
  const seq = ++refreshSeq;
  const from = sinceRefresh.length;
  const symbol = market.symbol;
  inFlight += 1;
  try {
    const [orders, acct, all] = await Promise.all([
      signed<OpenOrder[]>(me, "GET", "/api/v3/openOrders", { symbol }),
      signed<{ balances: Balance[]; commissionRates?: { maker: string; taker: string } }>(me, "GET", "/api/v3/account", {
        omitZeroBalances: "true",
      }),
      signed<OrderRow[]>(me, "GET", "/api/v3/allOrders", { symbol, limit: String(HISTORY_ROWS) }), // the latest ones
    ]);
    if (seq !== refreshSeq) return; // a newer refresh (or market) wins
    if (acct.commissionRates) {
      fees = { maker: Number(acct.commissionRates.maker), taker: Number(acct.commissionRates.taker) };
    }
    const since = sinceRefresh.slice(from);
    account = since.reduce(applyEvent, fromSnapshot(account, symbol, orders, acct.balances));
    history = since.reduce(historyAfter, historyFromRows(symbol, all));
    renderAccount();
  } catch (error) {
    if (error instanceof ApiError && (error.code === -2014 || error.code === -2015)) {
      $("order-result").className = "result error";
      $("order-result").textContent = `This browser's key was refused: ${error.message}`;
    } else reportError(error);
  } finally {
    inFlight -= 1;
    if (inFlight === 0) sinceRefresh = [];
  }
}

function historyAfter(h: HistoryState, event: UserEvent): HistoryState {
  return event.e === "executionReport" ? applyToHistory(h, event) : h;
}

function onUserEvent(event: UserEvent): void {
  if (inFlight > 0) sinceRefresh.push(event);
  const next = applyEvent(account, event);
  const nextHistory = historyAfter(history, event);
  if (next === account && nextHistory === history) return;
  account = next;
  history = nextHistory;
  renderAccount();
}

function startUserStream(): void {
  stopUserStream();
  const who = me;
  if (!who) return;
  userStream = new UserStream(
    {
      create: async () => (await signed<{ listenKey: string }>(who, "POST", "/api/v3/userDataStream")).listenKey,
      keepAlive: async (listenKey) => void (await signed(who, "PUT", "/api/v3/userDataStream", { listenKey })),
    },
    { onOpen: () => void refreshAccount(), onMessage: (data) => onUserEvent(data as UserEvent) },
  );
}

function stopUserStream(): void {
  userStream?.close();
  userStream = undefined;
}

function renderAccount(): void {
  $("open-orders").innerHTML =
    account.orders
      .map(
        (o) => `<tr data-order-id="${o.orderId}"><td class="${o.side === "BUY" ? "up" : "down"}">${o.side === "BUY" ? "Buy" : "Sell"}</td>
          <td>${fmtPrice(o.price)}</td><td>${fmtQty(o.origQty)}</td><td>${fmtQty(o.executedQty)}</td>
          <td><button type="button" class="link cancel" data-order-id="${o.orderId}">Cancel</button></td></tr>`,
      )
      .join("") || `<tr><td colspan="5" class="muted">No open orders in ${market.symbol}</td></tr>`;
  $("balances").innerHTML = account.balances
    .map((b) => `<tr data-asset="${b.asset}"><td>${b.asset}</td><td class="free">${trim(b.free)}</td><td>${trim(b.locked)}</td></tr>`)
    .join("");
  $("fills").innerHTML =
    account.fills
      .map((f) => {
        const time = new Date(f.time).toLocaleTimeString("en-GB", { hour12: false });
        return `<tr data-fill="${f.key}" data-order-id="${f.orderId}"><td>${f.symbol}</td>
          <td class="${f.side === "BUY" ? "up" : "down"}">${f.side === "BUY" ? "Buy" : "Sell"}</td>
          <td>${trim(f.price)}</td><td class="qty">${trim(f.qty)}</td><td>${trim(f.fee)} ${f.feeAsset}</td>
          <td class="muted">${time}</td></tr>`;
      })
      .join("") || `<tr><td colspan="6" class="muted">No fills yet</td></tr>`;
  renderHistory();
  updateEstimate();
}

function renderHistory(): void {
  $("order-history").innerHTML =
    history.orders
      .map((o) => {
        const time = new Date(o.updateTime).toLocaleString("en-GB", { dateStyle: "short", timeStyle: "medium" });
        const avg = averagePrice(o);
        return `<tr data-order-id="${o.orderId}" data-status="${o.status}"><td class="muted">${time}</td>
          <td class="${o.side === "BUY" ? "up" : "down"}">${o.side === "BUY" ? "Buy" : "Sell"}</td>
          <td>${o.type === "MARKET" ? "market" : fmtPrice(o.price)}</td>
          <td>${fmtQty(o.executedQty)} / ${fmtQty(o.origQty)}</td><td>${avg === undefined ? "–" : fmtPrice(avg)}</td>
          <td class="status">${o.status.toLowerCase().replaceAll("_", " ")}</td></tr>`;
      })
      .join("") || `<tr><td colspan="6" class="muted">No finished orders in ${market.symbol}</td></tr>`;
}

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

function selectMarket(symbol: string): void {
  market = markets.find((m) => m.symbol === symbol) ?? markets[0];
  localStorage.setItem("investo.market", market.symbol);
  $<HTMLSelectElement>("market").value = market.symbol;
  $<HTMLInputElement>("price").step = trim(market.filters.tickSize);
  $<HTMLInputElement>("qty").step = trim(market.filters.stepSize);
  $<HTMLInputElement>("price").value = "";
  $("tape").innerHTML = "";
  setSide(side);
  connect();
  void refreshAccount();
}

async function start(): Promise<void> {
  setupChart();
  await syncClock().catch(reportError);
  const info = await publicGet<{ symbols: SymbolInfo[] }>("/api/v3/exchangeInfo");
  markets = info.symbols.map((s) => {
    const filters = filtersOf(s);
    return {
      symbol: s.symbol,
      base: s.baseAsset,
      quote: s.quoteAsset,
      filters,
      priceDecimals: decimalsOf(filters.tickSize),
      qtyDecimals: decimalsOf(filters.stepSize),
    };
  });
  const select = $<HTMLSelectElement>("market");
  select.innerHTML = markets.map((m) => `<option value="${m.symbol}">${m.base}/${m.quote}</option>`).join("");
  select.onchange = () => selectMarket(select.value);

  $("asks").onclick = onBookClick;
  $("bids").onclick = onBookClick;
  for (const b of document.querySelectorAll<HTMLButtonElement>(".side")) {
    b.onclick = () => setSide(b.dataset.side as "BUY" | "SELL");
  }
  for (const r of document.querySelectorAll<HTMLInputElement>('input[name="type"]')) {
    r.onchange = () => setType(r.value as "LIMIT" | "MARKET");
  }
  $("post-only").onchange = () => {
    if ($<HTMLInputElement>("post-only").checked) $<HTMLInputElement>("ioc").checked = false;
    updateEstimate();
  };
  $("ioc").onchange = () => {
    if ($<HTMLInputElement>("ioc").checked) $<HTMLInputElement>("post-only").checked = false;
  };
  $("price").oninput = updateEstimate;
  $("qty").oninput = updateEstimate;
  $("order-form").onsubmit = (e) => void submitOrder(e);
  $("cancel-all").onclick = () => void cancel();
  $("open-orders").onclick = (e) => {
    const b = (e.target as HTMLElement).closest<HTMLElement>("button.cancel");
    if (b?.dataset.orderId) void cancel(Number(b.dataset.orderId));
  };

  cannotSign = await signingProblem();
  me = cannotSign ? undefined : await loadIdentity().catch(() => undefined);
  renderAccountBox();
  selectMarket(localStorage.getItem("investo.market") ?? markets[0].symbol);
  if (me) startUserStream(); // its first connection refreshes over REST
  setInterval(() => bookDirty && renderBook(), 100);
}

void start().catch((error) => {
  app.insertAdjacentHTML("afterbegin", `<div class="fatal">Could not start: ${describe(error)}</div>`);
});
