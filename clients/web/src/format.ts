// Number, time and interval formatting for the page.

import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { Interval } from "./gen/marketdata/v1/marketdata_pb";

/** Interval labels as the service names them (Binance's set). */
export const INTERVAL_LABELS: ReadonlyMap<Interval, string> = new Map([
  [Interval.INTERVAL_1S, "1s"],
  [Interval.INTERVAL_1M, "1m"],
  [Interval.INTERVAL_3M, "3m"],
  [Interval.INTERVAL_5M, "5m"],
  [Interval.INTERVAL_15M, "15m"],
  [Interval.INTERVAL_30M, "30m"],
  [Interval.INTERVAL_1H, "1h"],
  [Interval.INTERVAL_2H, "2h"],
  [Interval.INTERVAL_4H, "4h"],
  [Interval.INTERVAL_6H, "6h"],
  [Interval.INTERVAL_8H, "8h"],
  [Interval.INTERVAL_12H, "12h"],
  [Interval.INTERVAL_1D, "1d"],
  [Interval.INTERVAL_3D, "3d"],
  [Interval.INTERVAL_1W, "1w"],
  [Interval.INTERVAL_1MO, "1M"],
]);

export function intervalLabel(interval: Interval): string {
  return INTERVAL_LABELS.get(interval) ?? String(interval);
}

export function parseInterval(label: string): Interval | undefined {
  for (const [interval, text] of INTERVAL_LABELS) {
    if (text === label) {
      return interval;
    }
  }
  return undefined;
}

/** Seconds since the epoch (0 for an unset timestamp). */
export function seconds(ts: Timestamp | undefined): number {
  return ts === undefined ? 0 : Number(ts.seconds) + ts.nanos / 1e9;
}

export function price(value: number, precision: number): string {
  return value.toLocaleString("en-US", {
    minimumFractionDigits: precision,
    maximumFractionDigits: precision,
  });
}

export function volume(value: number): string {
  return value.toLocaleString("en-US", { maximumFractionDigits: 4 });
}

export function percent(change: number): string {
  const sign = change > 0 ? "+" : change < 0 ? "−" : "";
  return `${sign}${Math.abs(change * 100).toFixed(2)}%`;
}

/** `2026-01-01 12:34:56` in UTC. */
export function utc(secondsSinceEpoch: number): string {
  return new Date(secondsSinceEpoch * 1000).toISOString().slice(0, 19).replace("T", " ");
}

/** "42 s", "3 min", "2 h", "5 d". */
export function age(secondsAgo: number): string {
  const s = Math.max(0, Math.round(secondsAgo));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}
