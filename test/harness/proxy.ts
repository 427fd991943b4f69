// A TCP proxy a test can cut: a link between two processes (e.g. the route connections of a cluster node) that
// fails while everything else keeps working, without root, netem or iptables.
import { connect, createServer, type Socket } from "node:net";

/** A running proxy to one target port. Dispose it to close it and every connection through it. */
export interface TcpProxy extends AsyncDisposable {
  /** The port it listens on, on 127.0.0.1. */
  readonly port: number;
  /** Local ports of its connections to the target: the peer ports the target sees for connections through it. */
  upstreamPorts(): Set<number>;
  /** Destroys every connection through it and closes each new one at once, until {@link heal}. */
  cut(): void;
  heal(): void;
}

/** Starts a proxy on a free port of 127.0.0.1 forwarding each connection to 127.0.0.1:`targetPort`. */
export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  const upstream = new Set<Socket>();
  let cut = false;
  const track = (s: Socket, set: Set<Socket>) => {
    set.add(s);
    s.once("close", () => set.delete(s));
    s.on("error", () => undefined); // a reset peer is an outcome here, not a test failure
  };
  const server = createServer((down) => {
    track(down, sockets);
    if (cut) {
      down.destroy();
      return;
    }
    const up = connect(targetPort, "127.0.0.1");
    track(up, sockets);
    track(up, upstream);
    down.pipe(up);
    up.pipe(down);
    down.once("close", () => up.destroy());
    up.once("close", () => down.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as { port: number };
  return {
    port,
    upstreamPorts: () => new Set([...upstream].map((s) => s.localPort).filter((p): p is number => p !== undefined)),
    cut() {
      cut = true;
      for (const s of sockets) s.destroy();
    },
    heal() {
      cut = false;
    },
    async [Symbol.asyncDispose]() {
      cut = true;
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
