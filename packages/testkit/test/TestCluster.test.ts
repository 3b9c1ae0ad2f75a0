import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Effect, Exit, Scope } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"

const portOpen = (endpoint: string) =>
  new Promise<boolean>((resolve) => {
    const [host, port] = endpoint.split(":")
    const socket = net.connect(Number(port), host!, () => {
      socket.destroy()
      resolve(true)
    })
    socket.on("error", () => resolve(false))
  })

describe("TestCluster", () => {
  it.live("starts a master and agents in process, and stops everything with its scope", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const cluster = yield* TestCluster.make({ agents: 2, agentResources: "cpus:1;mem:256", agentAttributes: (i) => `zone:z${i}` })
        .pipe(Scope.provide(scope))
      const state = yield* cluster.waitFor("two agents", (s) => s.agents.length === 2)
      expect(state.agents.map((a) => a.state)).toEqual([v1.Agent_State.ACTIVE, v1.Agent_State.ACTIVE])
      expect(state.agents.map((a) => a.info?.attributes[0]?.value).sort()).toEqual([
        { $case: "text", value: "z0" },
        { $case: "text", value: "z1" }
      ])
      expect(cluster.agents.map((a) => fs.existsSync(a.workDir))).toEqual([true, true])
      expect(yield* Effect.promise(() => portOpen(cluster.master))).toBe(true)

      yield* Scope.close(scope, Exit.void)
      expect(yield* Effect.promise(() => portOpen(cluster.master))).toBe(false)
      expect(fs.existsSync(cluster.workDir)).toBe(false)
    }))

  it.live("waitFor fails with a TimeoutError naming what it waited for", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const error = yield* cluster.waitFor("a fourth agent", (s) => s.agents.length === 4, { timeout: 300 }).pipe(Effect.flip)
      expect(error.message).toBe("timed out after 300 ms waiting for a fourth agent")
    }))

  it("works for Promise users with `await using`", async () => {
    let master = ""
    let workDir = ""
    {
      await using cluster = await TestCluster.start({ agents: 1 })
      master = cluster.master
      workDir = cluster.workDir
      const state = await Effect.runPromise(cluster.operator.state)
      expect(state.agents).toHaveLength(1)
    }
    expect(await portOpen(master)).toBe(false)
    expect(fs.existsSync(workDir)).toBe(false)
  })
})
