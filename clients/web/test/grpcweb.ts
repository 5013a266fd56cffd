// A test page (bundled for tests only, never shipped): Google's grpc-web
// client in text mode (application/grpc-web-text, XHR), calling the gateway
// from another origin. grpc-web's code generator is a native protoc plugin,
// not on npm, so the methods are described by hand with MethodDescriptor and
// protobuf-es does the (de)serialisation.
//
// Query: ?target=http://host:port&symbol=BTCUSDT&deadlineMs=4000

import { fromBinary, toBinary, create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { GrpcWebClientBase, MethodDescriptor, MethodType, type RpcError } from "grpc-web";
import {
  GetPriceRequestSchema,
  GetPriceResponseSchema,
  Interval,
  SubscribeCandlesRequestSchema,
  SubscribeCandlesResponseSchema,
} from "../src/gen/marketdata/v1/marketdata_pb";

const SERVICE = "marketdata.v1.MarketDataService";

function describe<I extends DescMessage, O extends DescMessage>(
  method: string,
  type: string,
  input: I,
  output: O,
): MethodDescriptor<MessageShape<I>, MessageShape<O>> {
  // grpc-web only stores the constructors; protobuf-es messages are plain objects.
  const shape = Object as unknown as new () => never;
  return new MethodDescriptor(
    `/${SERVICE}/${method}`,
    type,
    shape,
    shape,
    (message: MessageShape<I>) => toBinary(input, message),
    (bytes: Uint8Array) => fromBinary(output, bytes),
  );
}

const params = new URLSearchParams(location.search);
const target = params.get("target") ?? location.origin;
const symbol = params.get("symbol") ?? "BTCUSDT";
const deadlineMs = Number(params.get("deadlineMs") ?? "4000");
const client = new GrpcWebClientBase({ format: "text" });

function show(id: string, code: number, text: string): void {
  const element = document.getElementById(id);
  if (element === null) return;
  element.dataset["code"] = String(code);
  element.textContent = `${code} ${text}`;
}

const getPrice = describe("GetPrice", MethodType.UNARY, GetPriceRequestSchema, GetPriceResponseSchema);
// grpc-web 2.x ships unaryCall (its typings still name thenableCall as well).
client
  .unaryCall(
    `${target}/${SERVICE}/GetPrice`,
    create(GetPriceRequestSchema, { symbol: "NOPE" }),
    {},
    getPrice,
  )
  .then(
    () => show("unary", 0, "OK"),
    (error: RpcError) => show("unary", error.code, error.message),
  );

const subscribe = describe(
  "SubscribeCandles",
  MethodType.SERVER_STREAMING,
  SubscribeCandlesRequestSchema,
  SubscribeCandlesResponseSchema,
);
const events = document.getElementById("events");
const stream = client.serverStreaming(
  `${target}/${SERVICE}/SubscribeCandles`,
  create(SubscribeCandlesRequestSchema, {
    series: [{ symbol, interval: Interval.INTERVAL_1M }],
    history: 10,
  }),
  { deadline: String(Date.now() + deadlineMs), "x-test-client": "grpc-web-text" },
  subscribe,
);
stream.on("metadata", (metadata) => {
  const element = document.getElementById("metadata");
  if (element !== null) element.textContent = JSON.stringify(metadata);
});
stream.on("data", (response) => {
  const item = document.createElement("li");
  item.dataset["kind"] = response.event.case ?? "none";
  if (response.event.case === "candle") {
    const candle = response.event.value;
    item.dataset["openTime"] = String(candle.openTime?.seconds ?? 0n);
    item.dataset["close"] = String(candle.close);
    item.dataset["revision"] = String(candle.revision);
    item.textContent = `candle ${item.dataset["openTime"]} close ${candle.close} rev ${candle.revision}`;
  } else {
    item.textContent = item.dataset["kind"];
  }
  events?.append(item);
});
stream.on("status", (status) => show("status", status.code, status.details));
stream.on("error", (error) => show("status", error.code, error.message));
