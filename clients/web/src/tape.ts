// The trades tape of the selected symbol: the newest trades first, live from
// SubscribeTrades (resumed after drops without a gap or a repeat).

import type { ConnectError } from "@connectrpc/connect";
import { runTradeStream, type MarketData } from "./api";
import type { ConnectionIndicator } from "./connection";
import { price, seconds, volume } from "./format";
import { AggressorSide, type Trade } from "./gen/marketdata/v1/marketdata_pb";

const HISTORY = 50;
const ROWS = 50;

function side(value: AggressorSide): string {
  if (value === AggressorSide.BUY) return "buy";
  if (value === AggressorSide.SELL) return "sell";
  return "unknown";
}

/** `12:34:56.789` in UTC. */
function clock(secondsSinceEpoch: number): string {
  return new Date(secondsSinceEpoch * 1000).toISOString().slice(11, 23);
}

export class TradeTape {
  private current: AbortController | undefined;
  private precision = 2;
  private count = 0;

  constructor(
    private readonly client: MarketData,
    private readonly table: HTMLElement,
    private readonly body: HTMLElement,
    private readonly connection: ConnectionIndicator,
  ) {}

  /** Show the trades of `symbol`, replacing whatever was shown. */
  show(symbol: string, precision: number): void {
    this.current?.abort();
    const controller = new AbortController();
    this.current = controller;
    this.precision = precision;
    this.clear();
    this.table.dataset["symbol"] = symbol;
    this.connection.set("trades", "connecting");
    void runTradeStream(
      this.client,
      [symbol],
      { history: HISTORY, silenceMs: 20_000 },
      {
        trade: (trade) => this.add(trade),
        snapshotEnd: () => {
          this.table.dataset["ready"] = "true";
        },
        reset: () => this.clear(),
        health: (health, detail) => this.connection.set("trades", health, detail),
        fatal: (error: ConnectError) => {
          this.connection.remove("trades");
          this.table.dataset["error"] = error.rawMessage;
        },
      },
      controller.signal,
    );
  }

  private clear(): void {
    this.body.replaceChildren();
    this.count = 0;
    this.table.dataset["ready"] = "false";
    this.table.dataset["trades"] = "0";
    this.table.dataset["lastTradeId"] = "";
  }

  private add(trade: Trade): void {
    const row = document.createElement("tr");
    const kind = side(trade.side);
    row.className = `side-${kind}`;
    row.dataset["side"] = kind;
    row.dataset["tradeId"] = trade.tradeId;
    const cells: [string, string][] = [
      [clock(seconds(trade.eventTime)), ""],
      [kind, "side"],
      [price(trade.price, this.precision), "num"],
      [volume(trade.quantity), "num"],
    ];
    for (const [text, cls] of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      if (cls) cell.className = cls;
      row.append(cell);
    }
    this.body.prepend(row);
    while (this.body.children.length > ROWS) this.body.lastElementChild?.remove();
    this.count += 1;
    this.table.dataset["trades"] = String(this.count);
    this.table.dataset["lastTradeId"] = trade.tradeId;
  }
}
