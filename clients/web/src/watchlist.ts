// The watchlist: bid and ask from BatchGetPrices (polled once a second), and
// the change and sparkline of each symbol from one resumable stream of
// 1-minute candles.

import { ConnectError } from "@connectrpc/connect";
import { Backoff, DOWN_AFTER_FAILURES, runCandleStream, sleep, type MarketData } from "./api";
import type { ConnectionIndicator } from "./connection";
import { age, intervalLabel, percent, price, seconds } from "./format";
import {
  Interval,
  MarketState,
  PriceType,
  type Candle,
  type Price,
  type SymbolInfo,
} from "./gen/marketdata/v1/marketdata_pb";

const POLL_MS = 1000;
const SPARK_POINTS = 60;
const SVG = "http://www.w3.org/2000/svg";

interface Row {
  info: SymbolInfo;
  row: HTMLTableRowElement;
  badge: HTMLElement;
  bid: HTMLElement;
  ask: HTMLElement;
  change: HTMLElement;
  spark: SVGSVGElement;
  line: SVGPolylineElement;
  /** open time (s) -> [open, close] of the latest candles. */
  candles: Map<number, [number, number]>;
}

function cell(row: HTMLTableRowElement, testId: string): HTMLTableCellElement {
  const td = row.insertCell();
  td.className = "num";
  td.dataset["testid"] = testId;
  td.textContent = "—";
  return td;
}

/** The interval the sparklines use: 1m when served, else the shortest one. */
export function sparkInterval(info: SymbolInfo): Interval {
  if (info.intervals.includes(Interval.INTERVAL_1M)) return Interval.INTERVAL_1M;
  return [...info.intervals].sort((a, b) => a - b)[0] ?? Interval.INTERVAL_1M;
}

export class Watchlist {
  private readonly rows = new Map<string, Row>();

  constructor(
    private readonly client: MarketData,
    private readonly table: HTMLTableElement,
    private readonly body: HTMLTableSectionElement,
    symbols: SymbolInfo[],
    private readonly connection: ConnectionIndicator,
    onSelect: (symbol: string) => void,
  ) {
    body.replaceChildren();
    for (const info of symbols) {
      const row = body.insertRow();
      row.dataset["testid"] = `row-${info.symbol}`;
      row.dataset["symbol"] = info.symbol;
      row.dataset["stale"] = "false";
      const head = document.createElement("th");
      head.scope = "row";
      const button = document.createElement("button");
      button.type = "button";
      button.className = "symbol-button";
      button.textContent = info.symbol;
      button.dataset["testid"] = `select-${info.symbol}`;
      button.setAttribute("aria-label", `Show the chart of ${info.symbol}`);
      button.addEventListener("click", () => onSelect(info.symbol));
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.dataset["testid"] = `stale-${info.symbol}`;
      badge.hidden = true;
      head.append(button, badge);
      row.append(head);
      const bid = cell(row, `bid-${info.symbol}`);
      const ask = cell(row, `ask-${info.symbol}`);
      const change = cell(row, `change-${info.symbol}`);
      const sparkCell = row.insertCell();
      const spark = document.createElementNS(SVG, "svg");
      spark.classList.add("spark");
      spark.setAttribute("viewBox", "0 0 100 24");
      spark.setAttribute("preserveAspectRatio", "none");
      spark.setAttribute("aria-hidden", "true");
      spark.dataset["testid"] = `spark-${info.symbol}`;
      spark.dataset["points"] = "0";
      const line = document.createElementNS(SVG, "polyline");
      spark.append(line);
      sparkCell.append(spark);
      this.rows.set(info.symbol, {
        info, row, badge, bid, ask, change, spark, line, candles: new Map(),
      });
    }
    table.dataset["symbols"] = String(symbols.length);
  }

  /** Highlight the symbol shown in the chart. */
  select(symbol: string): void {
    for (const [name, row] of this.rows) {
      row.row.setAttribute("aria-current", String(name === symbol));
    }
  }

  /** Poll prices and stream candles until `signal` aborts. */
  start(signal: AbortSignal): void {
    void this.pollPrices(signal);
    void this.streamCandles(signal);
  }

  private async pollPrices(signal: AbortSignal): Promise<void> {
    const symbols = [...this.rows.keys()];
    const backoff = new Backoff(POLL_MS, 5000);
    this.connection.set("prices", "connecting");
    while (!signal.aborted) {
      let wait = POLL_MS;
      try {
        const response = await this.client.batchGetPrices({ symbols }, { signal, timeoutMs: 5000 });
        backoff.reset();
        this.connection.set("prices", "up");
        for (const quote of response.prices) this.showPrice(quote);
      } catch (thrown) {
        if (signal.aborted) return;
        wait = backoff.next();
        const error = ConnectError.from(thrown);
        const health = backoff.failures >= DOWN_AFTER_FAILURES ? "down" : "retrying";
        this.connection.set("prices", health, error.rawMessage);
      }
      await sleep(wait, signal);
    }
  }

  private showPrice(quote: Price): void {
    const row = this.rows.get(quote.symbol);
    if (row === undefined) return;
    const precision = row.info.pricePrecision;
    const known = quote.eventTime !== undefined;
    row.bid.textContent = known ? price(quote.bid, precision) : "—";
    row.ask.textContent = known ? price(quote.ask, precision) : "—";
    row.row.dataset["stale"] = String(quote.stale);
    const closed = known && quote.marketState === MarketState.CLOSED;
    const indicative =
      known &&
      (quote.priceType === PriceType.INDICATIVE || quote.priceType === PriceType.OLD_INDICATIVE);
    row.row.dataset["market"] = closed ? "closed" : "open";
    row.badge.hidden = !quote.stale && !closed && !indicative;
    if (!known) {
      row.badge.textContent = "no data";
      row.badge.title = `No quote received for ${quote.symbol} yet`;
    } else if (quote.stale) {
      const ago = Date.now() / 1000 - seconds(quote.receiveTime);
      row.badge.textContent = "stale";
      row.badge.title = `Last quote received ${age(ago)} ago`;
    } else if (closed) {
      row.badge.textContent = "closed";
      row.badge.title = "Market closed: prices are indicative and no candles are built";
    } else if (indicative) {
      row.badge.textContent = "indicative";
      row.badge.title = "Indicative price: not tradable";
    }
  }

  private async streamCandles(signal: AbortSignal): Promise<void> {
    const series = [...this.rows.values()]
      .slice(0, 100) // the service's limit per stream
      .map((row) => ({ symbol: row.info.symbol, interval: sparkInterval(row.info) }));
    this.connection.set("watchlist", "connecting");
    await runCandleStream(
      this.client,
      series,
      { history: SPARK_POINTS, silenceMs: 20_000 },
      {
        candle: (candle) => this.addCandle(candle),
        snapshotEnd: () => undefined,
        heartbeat: () => undefined,
        reset: () => {
          for (const row of this.rows.values()) row.candles.clear();
        },
        health: (health, detail) => this.connection.set("watchlist", health, detail),
        fatal: (error) => {
          this.connection.remove("watchlist");
          for (const row of this.rows.values()) {
            row.change.title = `Sparkline unavailable: ${error.rawMessage}`;
          }
        },
      },
      signal,
    );
  }

  private addCandle(candle: Candle): void {
    const row = this.rows.get(candle.symbol);
    if (row === undefined) return;
    row.candles.set(seconds(candle.openTime), [candle.open, candle.close]);
    if (row.candles.size > SPARK_POINTS) {
      const times = [...row.candles.keys()].sort((a, b) => a - b);
      for (const time of times.slice(0, times.length - SPARK_POINTS)) row.candles.delete(time);
    }
    this.drawSpark(row, candle.interval);
  }

  private drawSpark(row: Row, interval: Interval): void {
    const bars = [...row.candles.entries()].sort((a, b) => a[0] - b[0]).map(([, bar]) => bar);
    const first = bars[0];
    const last = bars[bars.length - 1];
    if (first === undefined || last === undefined) return;
    const closes = bars.map(([, close]) => close);
    const low = Math.min(...closes);
    const high = Math.max(...closes);
    const span = high - low || 1;
    const step = bars.length > 1 ? 100 / (bars.length - 1) : 0;
    const points = closes
      .map((close, i) => `${(i * step).toFixed(2)},${(22 - ((close - low) / span) * 20).toFixed(2)}`)
      .join(" ");
    row.line.setAttribute("points", points);
    row.spark.dataset["points"] = String(bars.length);
    const change = first[0] === 0 ? 0 : (last[1] - first[0]) / first[0];
    const direction = change > 0 ? "up" : change < 0 ? "down" : "flat";
    row.spark.setAttribute("class", `spark ${direction}`);
    row.change.className = `num ${direction}`;
    const arrow = direction === "up" ? "▲ " : direction === "down" ? "▼ " : "";
    row.change.textContent = `${arrow}${percent(change)}`;
    row.change.title = `Change over the last ${bars.length} × ${intervalLabel(interval)}`;
  }
}
