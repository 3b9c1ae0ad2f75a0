import { describe, expect, it } from "@effect/vitest"
import { Agent } from "@berth/cluster-core"
import { v1 } from "@berth/proto"
import { Effect, References } from "effect"
import * as net from "node:net"
import * as path from "node:path"
import * as Framework from "./support/framework.ts"
import * as MasterSupport from "./support/master.ts"
import * as TempDir from "./support/tempDir.ts"

/**
 * A TCP relay to the master that can cut every open connection *silently*: bytes are read and
 * dropped both ways, nothing is closed or reset (a dead route, a NAT entry gone). Connections
 * opened after the cut pass normally.
 */
const silentCutProxy = (target: string) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly endpoint: string; readonly connections: () => number; readonly cut: () => void; readonly close: () => void }>(
      (resume) => {
        const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))]
        const open = new Set<readonly [net.Socket, net.Socket]>()
        let connections = 0
        const server = net.createServer((client) => {
          connections++
          const upstream = net.connect(port, host)
          const pair = [client, upstream] as const
          open.add(pair)
          client.pipe(upstream)
          upstream.pipe(client)
          for (const socket of pair) socket.on("error", () => {})
          const forget = () => open.delete(pair)
          client.on("close", forget)
          upstream.on("close", forget)
        })
        server.listen(0, "127.0.0.1", () => {
          const address = server.address() as net.AddressInfo
          resume(Effect.succeed({
            endpoint: `127.0.0.1:${address.port}`,
            connections: () => connections,
            cut: () => {
              for (const [client, upstream] of open) {
                client.unpipe(upstream)
                upstream.unpipe(client)
                // Keep reading (so nothing pushes back) and drop it; never end either side.
                client.removeAllListeners("end")
                upstream.removeAllListeners("end")
                client.on("data", () => {})
                upstream.on("data", () => {})
              }
              open.clear()
            },
            close: () => {
              server.close()
            }
          }))
        })
      }
    ),
    (proxy) => Effect.sync(proxy.close)
  )

describe("the agent's connection to the master", () => {
  it.live("a silent network cut is noticed by keepalive pings: the agent reconnects and is ACTIVE again", () =>
    Effect.gen(function*() {
      const dir = yield* TempDir.make("berth-keepalive-")
      // Unreachable after 2 s of silence, so the master side of the cut is quick.
      const master = yield* MasterSupport.start({ agentPingSeconds: 0.5, agentPingMisses: 4 })
      const proxy = yield* silentCutProxy(master.endpoint)
      const agent = yield* Agent.start({ master: proxy.endpoint, workDir: path.join(dir, "agent"), resources: "cpus:1;mem:256" })
      const agentId = yield* agent.registered
      const agentState = Effect.map(Framework.operatorState(master.endpoint), (state) => state.agents.find((a) => a.info?.agentId === agentId)?.state)
      expect(yield* agentState).toBe(v1.Agent_State.ACTIVE)
      const before = proxy.connections()

      proxy.cut()
      // The master hears nothing more and gives the agent up; the agent's stream stays "open".
      yield* Effect.gen(function*() {
        while ((yield* agentState) !== v1.Agent_State.UNREACHABLE) yield* Effect.sleep("100 millis")
      }).pipe(Effect.timeout("20 seconds"))

      // Keepalive (a PING every 10 s, 10 s to answer) ends the dead stream; the agent connects anew.
      yield* Effect.gen(function*() {
        while ((yield* agentState) !== v1.Agent_State.ACTIVE) yield* Effect.sleep("200 millis")
      }).pipe(Effect.timeout("45 seconds"))
      expect(proxy.connections()).toBeGreaterThan(before)
      expect((yield* Framework.operatorState(master.endpoint)).agents.map((a) => a.info?.agentId)).toEqual([agentId])
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 90_000)
})
