// The API client (connect-web's grpc-web transport over the gateway) and the
// resumable candle and trade streams: they reconnect with jittered, capped
// exponential backoff and continue after the last resume_token they saw.

import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import {
  MarketDataService,
  type Candle,
  type Heartbeat,
  type Interval,
  type Trade,
} from "./gen/marketdata/v1/marketdata_pb";

export type MarketData = Client<typeof MarketDataService>;

/** A client for the API served by the page's own origin (the gateway). */
export function marketData(baseUrl: string = location.origin): MarketData {
  const transport = createGrpcWebTransport({ baseUrl, useBinaryFormat: true });
  return createClient(MarketDataService, transport);
}

/** How one part of the page is connected. */
export type Health = "connecting" | "up" | "retrying" | "down";

/** Failures in a row after which a part counts as disconnected (it keeps retrying). */
export const DOWN_AFTER_FAILURES = 4;

/** Jittered exponential backoff: half the delay fixed, half random, capped. */
export class Backoff {
  failures = 0;

  constructor(
    private readonly baseMs = 250,
    private readonly capMs = 5000,
  ) {}

  next(): number {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** this.failures);
    this.failures += 1;
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  reset(): void {
    this.failures = 0;
  }
}

/** Whether a call that failed with this code may succeed if tried again. */
export function retryable(code: Code): boolean {
  switch (code) {
    case Code.Unavailable:
    case Code.Unknown:
    case Code.Internal:
    case Code.Canceled:
    case Code.DeadlineExceeded:
    case Code.ResourceExhausted:
    case Code.Aborted:
      return true;
    default:
      return false;
  }
}

/** Resolve after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

export interface SeriesRequest {
  symbol: string;
  interval: Interval;
}

export interface CandleStreamHandlers {
  /** A full snapshot of a candle (newer revisions replace older ones). */
  candle(candle: Candle): void;
  /** History is complete for every series; live updates follow. */
  snapshotEnd(): void;
  heartbeat(heartbeat: Heartbeat): void;
  /** The stream starts over (its resume token expired): forget what was received. */
  reset(): void;
  health(health: Health, detail: string): void;
  /** A failure that retrying cannot fix (unknown symbol, bad request): the stream stops. */
  fatal(error: ConnectError): void;
}

export interface CandleStreamOptions {
  history: number;
  /** Without any message (heartbeats included) for this long, the stream is restarted. */
  silenceMs: number;
}

/**
 * Subscribe to candles until `signal` aborts, resuming after drops.
 *
 * A drop (network error, server restart, UNAVAILABLE, slow-consumer
 * RESOURCE_EXHAUSTED, silence) reconnects with the last resume token, so the
 * stream continues exactly after the last response: no gap, no duplicate.
 * OUT_OF_RANGE (the token's data is no longer retained) starts over.
 */
export async function runCandleStream(
  client: MarketData,
  series: SeriesRequest[],
  options: CandleStreamOptions,
  on: CandleStreamHandlers,
  signal: AbortSignal,
): Promise<void> {
  let token = "";
  const backoff = new Backoff();
  while (!signal.aborted) {
    const attempt = new AbortController();
    const stop = (): void => attempt.abort();
    signal.addEventListener("abort", stop, { once: true });
    let silent = false;
    let watchdog = 0;
    const arm = (): void => {
      clearTimeout(watchdog);
      watchdog = window.setTimeout(() => {
        silent = true;
        attempt.abort();
      }, options.silenceMs);
    };
    let detail = "the stream ended";
    try {
      arm();
      const responses = client.subscribeCandles(
        { series, history: options.history, resumeToken: token },
        { signal: attempt.signal },
      );
      let first = true;
      for await (const response of responses) {
        arm();
        if (first) {
          first = false;
          backoff.reset();
          on.health("up", "");
        }
        token = response.resumeToken;
        switch (response.event.case) {
          case "candle":
            on.candle(response.event.value);
            break;
          case "snapshotEnd":
            on.snapshotEnd();
            break;
          case "heartbeat":
            on.heartbeat(response.event.value);
            break;
          default:
            break;
        }
      }
    } catch (thrown) {
      if (signal.aborted) {
        return;
      }
      const error = ConnectError.from(thrown);
      if (silent) {
        detail = "no data from the server";
      } else if (error.code === Code.OutOfRange) {
        token = "";
        on.reset();
        detail = "resuming from the start";
      } else if (!retryable(error.code)) {
        on.fatal(error);
        return;
      } else {
        detail = error.rawMessage || Code[error.code];
      }
    } finally {
      clearTimeout(watchdog);
      signal.removeEventListener("abort", stop);
    }
    if (signal.aborted) {
      return;
    }
    const delay = backoff.next();
    on.health(backoff.failures >= DOWN_AFTER_FAILURES ? "down" : "retrying", detail);
    await sleep(delay, signal);
  }
}

export interface TradeStreamHandlers {
  trade(trade: Trade): void;
  /** History is complete; live trades follow. */
  snapshotEnd(): void;
  /** The stream starts over (its resume token expired): forget what was received. */
  reset(): void;
  health(health: Health, detail: string): void;
  fatal(error: ConnectError): void;
}

/**
 * Subscribe to the trades of `symbols` until `signal` aborts, resuming after
 * drops as {@link runCandleStream} does (trades are never conflated: a stream
 * that fell behind is ended by the server and resumes here without a gap).
 */
export async function runTradeStream(
  client: MarketData,
  symbols: string[],
  options: { history: number; silenceMs: number },
  on: TradeStreamHandlers,
  signal: AbortSignal,
): Promise<void> {
  let token = "";
  const backoff = new Backoff();
  while (!signal.aborted) {
    const attempt = new AbortController();
    const stop = (): void => attempt.abort();
    signal.addEventListener("abort", stop, { once: true });
    let silent = false;
    let watchdog = 0;
    const arm = (): void => {
      clearTimeout(watchdog);
      watchdog = window.setTimeout(() => {
        silent = true;
        attempt.abort();
      }, options.silenceMs);
    };
    let detail = "the stream ended";
    try {
      arm();
      const responses = client.subscribeTrades(
        { symbols, history: options.history, resumeToken: token },
        { signal: attempt.signal },
      );
      let first = true;
      for await (const response of responses) {
        arm();
        if (first) {
          first = false;
          backoff.reset();
          on.health("up", "");
        }
        token = response.resumeToken;
        if (response.event.case === "trade") on.trade(response.event.value);
        else if (response.event.case === "snapshotEnd") on.snapshotEnd();
      }
    } catch (thrown) {
      if (signal.aborted) return;
      const error = ConnectError.from(thrown);
      if (silent) {
        detail = "no data from the server";
      } else if (error.code === Code.OutOfRange) {
        token = "";
        on.reset();
        detail = "resuming from the start";
      } else if (!retryable(error.code)) {
        on.fatal(error);
        return;
      } else {
        detail = error.rawMessage || Code[error.code];
      }
    } finally {
      clearTimeout(watchdog);
      signal.removeEventListener("abort", stop);
    }
    if (signal.aborted) return;
    const delay = backoff.next();
    on.health(backoff.failures >= DOWN_AFTER_FAILURES ? "down" : "retrying", detail);
    await sleep(delay, signal);
  }
}
