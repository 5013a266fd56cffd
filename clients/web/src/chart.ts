// The candle chart: history from SubscribeCandles (drawn at snapshot_end),
// then live updates (the forming candle redrawn, new candles appended, late
// corrections applied), resumed after drops without a gap. Scrolling to the
// left edge loads older candles page by page (GetCandles before the oldest
// one shown, from the service's history tier), and holes in the data (ranges
// the service has no candle for) are marked on the chart. Under it, in a
// pane of its own, the delta of each candle: buy minus sell volume.

import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  CandlestickSeries,
  ColorType,
  HistogramSeries,
  createChart,
  createSeriesMarkers,
  type CandlestickData,
  type HistogramData,
  type IChartApi,
  type ISeriesApi,
  type ISeriesMarkersPluginApi,
  type LogicalRange,
  type MouseEventParams,
  type SeriesMarker,
  type Time,
  type UTCTimestamp,
} from "lightweight-charts";
import { runCandleStream, type MarketData } from "./api";
import type { ConnectionIndicator } from "./connection";
import { age, intervalLabel, price, seconds, utc, volume } from "./format";
import type { Candle, Heartbeat, Interval, SymbolInfo } from "./gen/marketdata/v1/marketdata_pb";

const HISTORY = 500;
const VISIBLE_BARS = 120;
/** Candles fetched per older page, and how close (in bars) to the left edge triggers one. */
const OLDER_PAGE = 500;
const LOAD_OLDER_WITHIN = 20;
const HOLE = "#b45309";
/** Upstream data older than this (by the server's clock) is called stale. */
const STALE_AFTER_S = 30;
const UP = "#047857";
const DOWN = "#b91c1c";

interface Bar {
  time: number;
  closeTime: number;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
  /** Aggressor-buy minus aggressor-sell volume. */
  delta: number;
  closed: boolean;
  revision: number;
}

type MessageKind = "none" | "warning" | "error";

export class CandleChart {
  private readonly chart: IChartApi;
  private readonly candles: ISeriesApi<"Candlestick">;
  private readonly volumes: ISeriesApi<"Histogram">;
  private readonly deltas: ISeriesApi<"Histogram">;
  private readonly bars = new Map<number, Bar>();
  private times: number[] = [];
  private live = false;
  private symbol = "";
  private interval: Interval | undefined;
  private precision = 2;
  private hovered: number | undefined;
  private current: AbortController | undefined;
  private readonly markers: ISeriesMarkersPluginApi<Time>;
  /** Ranges [start, end) in seconds the service reported holding no candle for. */
  private readonly holes = new Map<number, number>();
  private earliest: number | undefined;
  private loadingOlder = false;
  private exhausted = false;
  private olderPages = 0;

  constructor(
    private readonly client: MarketData,
    private readonly container: HTMLElement,
    private readonly legend: HTMLElement,
    private readonly message: HTMLElement,
    private readonly connection: ConnectionIndicator,
    private readonly served: () => string[],
  ) {
    this.chart = createChart(container, {
      autoSize: true,
      layout: {
        background: { type: ColorType.Solid, color: "#ffffff" },
        textColor: "#374151",
        fontFamily: "system-ui, sans-serif",
      },
      grid: { vertLines: { color: "#f3f4f6" }, horzLines: { color: "#f3f4f6" } },
      rightPriceScale: { borderColor: "#e5e7eb" },
      timeScale: { borderColor: "#e5e7eb", timeVisible: true, secondsVisible: false },
    });
    this.candles = this.chart.addSeries(CandlestickSeries, {
      upColor: UP,
      downColor: DOWN,
      borderUpColor: UP,
      borderDownColor: DOWN,
      wickUpColor: UP,
      wickDownColor: DOWN,
    });
    this.volumes = this.chart.addSeries(HistogramSeries, {
      priceScaleId: "volume",
      priceFormat: { type: "volume" },
      lastValueVisible: false,
      priceLineVisible: false,
    });
    this.chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    this.deltas = this.chart.addSeries(
      HistogramSeries,
      { priceFormat: { type: "volume" }, lastValueVisible: false, priceLineVisible: false },
      1,
    );
    this.chart.panes()[1]?.setHeight(90);
    this.chart.subscribeCrosshairMove((param: MouseEventParams) => {
      this.hovered = param.time === undefined ? undefined : Number(param.time);
      this.renderLegend();
    });
    this.markers = createSeriesMarkers(this.candles, []);
    this.chart.timeScale().subscribeVisibleLogicalRangeChange((range: LogicalRange | null) => {
      if (range !== null && this.live && range.from < LOAD_OLDER_WITHIN) void this.loadOlder();
    });
  }

  /** Show `symbol` at `interval`, replacing whatever was shown. */
  show(symbol: string, interval: Interval, info: SymbolInfo | undefined): void {
    this.current?.abort();
    const controller = new AbortController();
    this.current = controller;
    this.symbol = symbol;
    this.interval = interval;
    this.precision = info?.pricePrecision ?? 2;
    const covered = info?.coverage.find((c) => c.interval === interval)?.earliestOpenTime;
    this.earliest = covered === undefined ? undefined : seconds(covered);
    this.candles.applyOptions({
      priceFormat: { type: "price", precision: this.precision, minMove: 10 ** -this.precision },
    });
    this.container.dataset["symbol"] = symbol;
    this.container.dataset["interval"] = intervalLabel(interval);
    this.container.setAttribute(
      "aria-label",
      `Candlestick chart of ${symbol}, ${intervalLabel(interval)} candles`,
    );
    this.clear();
    this.say("none", "");
    this.connection.set("chart", "connecting");
    void runCandleStream(
      this.client,
      [{ symbol, interval }],
      { history: HISTORY, silenceMs: 20_000 },
      {
        candle: (candle) => this.apply(candle),
        snapshotEnd: () => this.snapshotEnd(),
        heartbeat: (heartbeat) => this.heartbeat(heartbeat),
        reset: () => this.clear(),
        health: (health, detail) => this.connection.set("chart", health, detail),
        fatal: (error) => this.fatal(error),
      },
      controller.signal,
    );
  }

  private clear(): void {
    this.bars.clear();
    this.times = [];
    this.live = false;
    this.hovered = undefined;
    this.holes.clear();
    this.markers.setMarkers([]);
    this.container.dataset["holes"] = "0";
    this.loadingOlder = false;
    this.exhausted = false;
    this.olderPages = 0;
    this.candles.setData([]);
    this.volumes.setData([]);
    this.deltas.setData([]);
    this.container.dataset["ready"] = "false";
    this.reflect();
  }

  /** Store a candle; true when its open time is new to the chart. */
  private keep(candle: Candle): { bar: Bar; known: Bar | undefined } | undefined {
    const time = seconds(candle.openTime);
    const known = this.bars.get(time);
    if (known !== undefined && known.revision > candle.revision) return undefined; // stale
    const bar: Bar = {
      time,
      closeTime: seconds(candle.closeTime),
      open: candle.open,
      high: candle.high,
      low: candle.low,
      close: candle.close,
      volume: candle.volume,
      delta: 2 * candle.buyVolume - candle.volume,
      closed: candle.closed,
      revision: candle.revision,
    };
    this.bars.set(time, bar);
    if (known === undefined) this.insertTime(time);
    return { bar, known };
  }

  private apply(candle: Candle): void {
    const kept = this.keep(candle);
    if (kept === undefined) return;
    const { bar, known } = kept;
    const time = bar.time;
    if (!this.live) return; // history is drawn at snapshot_end
    const last = this.times[this.times.length - 1] ?? time;
    const historical = time < last;
    if (historical && known === undefined) {
      this.redraw(); // a candle inserted before the last one: rare, redraw all
    } else {
      this.candles.update(this.candleData(bar), historical);
      this.volumes.update(this.volumeData(bar), historical);
      this.deltas.update(this.deltaData(bar), historical);
    }
    this.reflect();
  }

  private insertTime(time: number): void {
    const last = this.times[this.times.length - 1];
    if (last === undefined || time > last) {
      this.times.push(time);
    } else {
      this.times.push(time);
      this.times.sort((a, b) => a - b);
    }
  }

  private snapshotEnd(): void {
    if (!this.live) {
      this.live = true;
      this.redraw();
      const count = this.times.length;
      if (count > VISIBLE_BARS) {
        this.chart.timeScale().setVisibleLogicalRange({ from: count - VISIBLE_BARS, to: count + 2 });
      } else {
        this.chart.timeScale().fitContent();
      }
    }
    this.container.dataset["ready"] = "true";
    if (this.bars.size === 0) {
      this.say("warning", `No candles stored for ${this.symbol} yet.`);
    }
    this.reflect();
  }

  private redraw(): void {
    const bars = this.times.map((time) => this.bars.get(time)).filter((b) => b !== undefined);
    this.candles.setData(bars.map((bar) => this.candleData(bar)));
    this.volumes.setData(bars.map((bar) => this.volumeData(bar)));
    this.deltas.setData(bars.map((bar) => this.deltaData(bar)));
    this.markHoles();
  }

  /** Older candles, before the oldest shown: one page of GetCandles from the history tier. */
  private async loadOlder(): Promise<void> {
    const first = this.times[0];
    const interval = this.interval;
    const signal = this.current?.signal;
    if (this.loadingOlder || this.exhausted || first === undefined || interval === undefined) {
      return;
    }
    if (this.earliest !== undefined && first <= this.earliest) {
      this.exhausted = true; // the service holds nothing older
      this.reflect();
      return;
    }
    const symbol = this.symbol;
    this.loadingOlder = true;
    this.reflect();
    try {
      const response = await this.client.getCandles(
        {
          symbol,
          interval,
          endTime: timestampFromMs(first * 1000),
          pageSize: OLDER_PAGE,
          includeMissing: true,
        },
        { signal, timeoutMs: 20_000 },
      );
      if (signal?.aborted || symbol !== this.symbol || interval !== this.interval) return;
      for (const range of response.missingRanges) {
        this.holes.set(seconds(range.startTime), seconds(range.endTime));
      }
      const before = this.times.length;
      for (const candle of response.candles) this.keep(candle);
      const added = this.times.length - before;
      if (response.candles.length < OLDER_PAGE) this.exhausted = true;
      if (added > 0) {
        const range = this.chart.timeScale().getVisibleLogicalRange();
        this.redraw();
        if (range !== null) {
          // Keep the same candles in view: everything shown moved right by `added`.
          this.chart
            .timeScale()
            .setVisibleLogicalRange({ from: range.from + added, to: range.to + added });
        }
        this.olderPages += 1;
      }
    } catch (error) {
      if (signal?.aborted) return;
      const why = error instanceof ConnectError ? `${Code[error.code]}: ${error.rawMessage}` : "";
      this.say("warning", `Older candles could not be loaded (scroll again to retry). ${why}`);
    } finally {
      this.loadingOlder = false;
      this.reflect();
    }
  }

  /** A marker on the first candle after each hole: a gap between loaded candles, or a
   * range the service reported missing. */
  private markHoles(): void {
    const at = new Set<number>();
    for (let i = 1; i < this.times.length; i += 1) {
      const previous = this.bars.get(this.times[i - 1] ?? 0);
      const time = this.times[i] ?? 0;
      if (previous !== undefined && previous.closeTime !== time) at.add(time);
    }
    for (const end of this.holes.values()) {
      if (this.bars.has(end)) at.add(end);
    }
    const markers: SeriesMarker<Time>[] = [...at]
      .sort((a, b) => a - b)
      .map((time) => ({
        time: time as UTCTimestamp,
        position: "aboveBar",
        shape: "square",
        color: HOLE,
        text: "no data before",
      }));
    this.markers.setMarkers(markers);
    this.container.dataset["holes"] = String(markers.length);
  }

  private heartbeat(heartbeat: Heartbeat): void {
    const mark = heartbeat.watermarks.find((w) => w.series?.symbol === this.symbol);
    if (mark === undefined) return;
    if (mark.lastEventTime === undefined) {
      this.sayStale(`No data has been received for ${this.symbol} yet.`);
      return;
    }
    const last = seconds(mark.lastEventTime);
    const lag = seconds(heartbeat.serverTime) - last;
    if (lag > STALE_AFTER_S) {
      this.sayStale(
        `Stale data: nothing new for ${this.symbol} since ${utc(last)} UTC (${age(lag)} ago).`,
      );
    } else if (this.message.dataset["kind"] === "warning") {
      this.say("none", "");
    }
  }

  private sayStale(text: string): void {
    if (this.message.dataset["kind"] !== "error") this.say("warning", text);
  }

  private fatal(error: ConnectError): void {
    this.connection.remove("chart");
    if (error.code === Code.NotFound) {
      const known = this.served();
      this.say(
        "error",
        `Unknown symbol “${this.symbol}”.` +
          (known.length ? ` Symbols served here: ${known.join(", ")}.` : ""),
      );
    } else if (error.code === Code.InvalidArgument) {
      this.say("error", `The server refused this chart: ${error.rawMessage}`);
    } else {
      this.say("error", `The chart stopped: ${Code[error.code]}: ${error.rawMessage}`);
    }
  }

  private say(kind: MessageKind, text: string): void {
    this.message.dataset["kind"] = kind;
    this.message.textContent = text;
    this.message.hidden = kind === "none";
  }

  private candleData(bar: Bar): CandlestickData {
    return {
      time: bar.time as UTCTimestamp,
      open: bar.open,
      high: bar.high,
      low: bar.low,
      close: bar.close,
    };
  }

  private volumeData(bar: Bar): HistogramData {
    return {
      time: bar.time as UTCTimestamp,
      value: bar.volume,
      color: bar.close >= bar.open ? "rgba(4, 120, 87, 0.35)" : "rgba(185, 28, 28, 0.35)",
    };
  }

  private deltaData(bar: Bar): HistogramData {
    return {
      time: bar.time as UTCTimestamp,
      value: bar.delta,
      color: bar.delta >= 0 ? "rgba(4, 120, 87, 0.7)" : "rgba(185, 28, 28, 0.7)",
    };
  }

  /** Mirror the drawn data in attributes (tests and assistive tools read them). */
  private reflect(): void {
    const data = this.container.dataset;
    const shown = this.live ? this.times : [];
    const first = shown[0];
    const lastTime = shown[shown.length - 1];
    const last = lastTime === undefined ? undefined : this.bars.get(lastTime);
    let gaps = 0;
    for (let i = 1; i < shown.length; i += 1) {
      const previous = this.bars.get(shown[i - 1] ?? 0);
      if (previous !== undefined && previous.closeTime !== shown[i]) gaps += 1;
    }
    data["bars"] = String(shown.length);
    data["gaps"] = String(gaps);
    data["firstTime"] = first === undefined ? "" : String(first);
    data["lastTime"] = lastTime === undefined ? "" : String(lastTime);
    data["lastClose"] = last === undefined ? "" : String(last.close);
    data["lastRevision"] = last === undefined ? "" : String(last.revision);
    data["lastClosed"] = last === undefined ? "" : String(last.closed);
    data["lastDelta"] = last === undefined ? "" : String(last.delta);
    data["olderPages"] = String(this.olderPages);
    data["loadingOlder"] = String(this.loadingOlder);
    data["exhausted"] = String(this.exhausted);
    data["missingRanges"] = String(this.holes.size);
    this.renderLegend();
  }

  private renderLegend(): void {
    const time = this.hovered ?? this.times[this.times.length - 1];
    const bar = time === undefined || !this.live ? undefined : this.bars.get(time);
    if (bar === undefined || this.interval === undefined) {
      this.legend.textContent = this.symbol ? `${this.symbol} · loading…` : "";
      return;
    }
    const p = (value: number): string => price(value, this.precision);
    const parts: [string, string][] = [
      ["O", p(bar.open)],
      ["H", p(bar.high)],
      ["L", p(bar.low)],
      ["C", p(bar.close)],
      ["V", volume(bar.volume)],
      ["Δ", volume(bar.delta)],
    ];
    const label = document.createElement("span");
    label.textContent = `${this.symbol} · ${intervalLabel(this.interval)} · ${utc(bar.time)} · `;
    const values = parts.flatMap(([name, value]) => {
      const b = document.createElement("b");
      b.textContent = value;
      return [document.createTextNode(` ${name} `), b];
    });
    const state = document.createTextNode(bar.closed ? " · closed" : " · forming");
    this.legend.replaceChildren(label, ...values, state);
  }
}
