// Candlewire's page: a watchlist, a candle chart with its delta, and the
// trades tape of the selected symbol, live over grpc-web.

import { ConnectError } from "@connectrpc/connect";
import { Backoff, DOWN_AFTER_FAILURES, marketData, sleep } from "./api";
import { CandleChart } from "./chart";
import { ConnectionIndicator } from "./connection";
import { intervalLabel, parseInterval } from "./format";
import { FeedState, Interval, Source, type SymbolInfo } from "./gen/marketdata/v1/marketdata_pb";
import { TradeTape } from "./tape";
import { Watchlist } from "./watchlist";

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`#${id} is missing from the page`);
  return found as T;
}

const client = marketData();
const connection = new ConnectionIndicator(element("connection"), element("connection-text"));

async function listSymbols(signal: AbortSignal): Promise<SymbolInfo[]> {
  const backoff = new Backoff();
  connection.set("symbols", "connecting");
  for (;;) {
    try {
      const response = await client.listSymbols({}, { signal, timeoutMs: 10_000 });
      connection.remove("symbols");
      return response.symbols;
    } catch (thrown) {
      const error = ConnectError.from(thrown);
      const health = backoff.failures + 1 >= DOWN_AFTER_FAILURES ? "down" : "retrying";
      connection.set("symbols", health, error.rawMessage);
      await sleep(backoff.next(), signal);
    }
  }
}

const FEED_POLL_MS = 5000;

/** Show the upstream feed's state (ListSymbols says it), polled: "login required" and back. */
export function showFeed(info: SymbolInfo | undefined): void {
  const box = element("feed");
  const text = element("feed-text");
  const state = info?.feedState ?? FeedState.UNSPECIFIED;
  box.hidden = state === FeedState.UNSPECIFIED;
  if (state === FeedState.OK) {
    box.dataset["state"] = "connected";
    text.textContent = "Feed live";
    box.title = "";
  } else if (state === FeedState.LOGIN_REQUIRED) {
    box.dataset["state"] = "disconnected";
    text.textContent = "Feed: login required";
    box.title = `${info?.feedStatus ?? ""}. An operator logs in at /auth/saxo/login.`;
  } else if (state === FeedState.DOWN) {
    box.dataset["state"] = "reconnecting";
    text.textContent = "Feed down";
    box.title = info?.feedStatus ?? "";
  }
}

async function watchFeed(first: SymbolInfo | undefined, signal: AbortSignal): Promise<void> {
  showFeed(first);
  while (!signal.aborted) {
    await sleep(FEED_POLL_MS, signal);
    try {
      const response = await client.listSymbols({}, { signal, timeoutMs: 5000 });
      showFeed(response.symbols[0]);
    } catch {
      // The connection indicator reports the server being away.
    }
  }
}

interface Selection {
  symbol: string;
  interval: Interval;
}

function readHash(): Partial<Selection> {
  const params = new URLSearchParams(location.hash.slice(1));
  const symbol = params.get("symbol")?.trim().toUpperCase() || undefined;
  const interval = parseInterval(params.get("interval") ?? "");
  return { ...(symbol ? { symbol } : {}), ...(interval !== undefined ? { interval } : {}) };
}

function writeHash(selection: Selection): void {
  const hash = `#symbol=${encodeURIComponent(selection.symbol)}&interval=${intervalLabel(selection.interval)}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

async function main(): Promise<void> {
  const lifetime = new AbortController();
  window.addEventListener("pagehide", () => lifetime.abort());
  const symbols = await listSymbols(lifetime.signal);
  const bySymbol = new Map(symbols.map((info) => [info.symbol, info]));
  const first = symbols[0];

  const form = element<HTMLFormElement>("chart-form");
  const input = element<HTMLInputElement>("symbol-input");
  const select = element<HTMLSelectElement>("interval-select");
  const options = element<HTMLDataListElement>("symbol-options");
  options.replaceChildren(
    ...symbols.map((info) => Object.assign(document.createElement("option"), { value: info.symbol })),
  );
  const intervals = first?.intervals ?? [Interval.INTERVAL_1M];
  select.replaceChildren(
    ...intervals.map((interval) =>
      Object.assign(document.createElement("option"), {
        value: intervalLabel(interval),
        textContent: intervalLabel(interval),
      }),
    ),
  );
  if (symbols.some((info) => info.source === Source.SIMULATED)) {
    element("source-note").textContent = "Prices are simulated: this is not a market.";
  }

  const chart = new CandleChart(
    client,
    element("chart"),
    element("legend"),
    element("chart-message"),
    connection,
    () => symbols.map((info) => info.symbol),
  );
  const tape = new TradeTape(client, element("trades"), element("trades-body"), connection);
  let taped = "";
  const show = (selection: Selection): void => {
    input.value = selection.symbol;
    select.value = intervalLabel(selection.interval);
    writeHash(selection);
    watchlist.select(selection.symbol);
    const info = bySymbol.get(selection.symbol);
    chart.show(selection.symbol, selection.interval, info);
    if (selection.symbol !== taped) {
      taped = selection.symbol;
      element("trades-title").textContent = `Trades · ${selection.symbol}`;
      tape.show(selection.symbol, info?.pricePrecision ?? 2);
    }
  };
  const current = (): Selection => ({
    symbol: input.value.trim().toUpperCase(),
    interval: parseInterval(select.value) ?? Interval.INTERVAL_1M,
  });
  const watchlist = new Watchlist(
    client,
    element("watchlist"),
    element("watchlist-body"),
    symbols,
    connection,
    (symbol) => show({ ...current(), symbol }),
  );
  watchlist.start(lifetime.signal);
  void watchFeed(first, lifetime.signal);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value.trim()) show(current());
  });
  select.addEventListener("change", () => {
    if (input.value.trim()) show(current());
  });
  window.addEventListener("hashchange", () => {
    const wanted = readHash();
    if (wanted.symbol !== undefined) {
      show({ symbol: wanted.symbol, interval: wanted.interval ?? current().interval });
    }
  });

  const wanted = readHash();
  const defaultInterval = intervals.includes(Interval.INTERVAL_1M)
    ? Interval.INTERVAL_1M
    : (intervals[0] ?? Interval.INTERVAL_1M);
  const symbol = wanted.symbol ?? first?.symbol;
  if (symbol !== undefined) show({ symbol, interval: wanted.interval ?? defaultInterval });
}

void main();
