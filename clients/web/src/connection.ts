// The connection indicator: the worst state of the page's parts.

import type { Health } from "./api";

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "disconnected";

const TEXT: Record<ConnectionState, string> = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Disconnected",
};

export class ConnectionIndicator {
  private readonly parts = new Map<string, Health>();
  private detail = "";

  constructor(
    private readonly element: HTMLElement,
    private readonly text: HTMLElement,
  ) {
    window.addEventListener("online", () => this.render());
    window.addEventListener("offline", () => this.render());
  }

  /** Record how one part of the page is connected. */
  set(part: string, health: Health, detail = ""): void {
    this.parts.set(part, health);
    if (health !== "up" && detail) {
      this.detail = detail;
    }
    this.render();
  }

  /** A part that no longer talks to the server (stopped, or failed for good). */
  remove(part: string): void {
    this.parts.delete(part);
    this.render();
  }

  get state(): ConnectionState {
    const states = [...this.parts.values()];
    if (!navigator.onLine || states.includes("down")) return "disconnected";
    if (states.includes("retrying")) return "reconnecting";
    if (states.length === 0 || states.includes("connecting")) return "connecting";
    return "connected";
  }

  private render(): void {
    const state = this.state;
    if (this.element.dataset["state"] === state) return;
    this.element.dataset["state"] = state;
    this.text.textContent = TEXT[state];
    this.element.title =
      state === "connected" || state === "connecting" ? "" : `Last problem: ${this.detail}`;
  }
}
