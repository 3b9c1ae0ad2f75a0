/**
 * Several masters on the in-process backend (issue 7): each master runs in a scope of its own
 * and shares the cluster's store (SQLite by default with several masters, or etcd). `kill` is a
 * crash: the leader's lease is not released, so the leader key still names the dead master until
 * the lease expires and a standby takes over; `restart` brings it back on the same port as a
 * standby. Agents and the operator client follow the leader. Option rules that several masters
 * bring are refused with the field and the rule.
 */
import { describe, expect, it } from "@effect/vitest"
import { Master } from "@berth/cluster-core"
import { v1 } from "@berth/proto"
import { Election, StateStore } from "@berth/storage"
import { Operator, TestCluster } from "@berth/testkit"
import { Effect, Option } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Scenarios from "./scenarios.ts"

const within = Scenarios.within

/** Polls `cluster.leader` until a master other than `not` leads. */
const awaitLeader = (cluster: TestCluster.TestCluster, not?: string) =>
  within(
    "a leader",
    45_000,
    Effect.gen(function*() {
      while (true) {
        const leader = yield* cluster.leader
        if (leader !== undefined && leader.name !== not) return leader
        yield* Effect.sleep("100 millis")
      }
    })
  )

/** How a call to a port nobody listens on ends (refused, or given up waiting for a connection). */
const gone = ["UNAVAILABLE", "CANCELLED", "DEADLINE_EXCEEDED"]

/** What a master says of itself, asked directly (not through the leader-following client). */
const ask = (endpoint: string) => Effect.scoped(Effect.flatMap(Operator.make(endpoint), (o) => o.master))

describe("in-process backend, several masters", () => {
  it.live("three masters on SQLite: a killed leader's lease is left to expire, a standby leads, the old one returns as a standby", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ masters: 3, agents: 1, master: { leaderLeaseSeconds: 4 } })
      // SQLite is the default store with several masters.
      expect(cluster.etcd).toBeUndefined()
      const registry = path.join(cluster.workDir, "registry.db")
      expect(fs.existsSync(registry)).toBe(true)
      expect(cluster.masters.map((m) => m.name)).toEqual(["master-1", "master-2", "master-3"])
      expect(new Set(cluster.masters.map((m) => m.endpoint)).size).toBe(3)
      expect(cluster.master).toBe(cluster.masters[0]!.endpoint)

      const first = yield* awaitLeader(cluster)
      expect(first.name).toBe("master-1")
      const standby = yield* ask(cluster.masters[1]!.endpoint)
      expect(standby.master?.leading).toBe(false)
      yield* cluster.waitFor("the agent registered", (s) => s.agents.length === 1 && s.agents[0]?.state === v1.Agent_State.ACTIVE)

      yield* first.kill
      // A crash, not a resignation: the leader key still names the dead master (its lease runs on).
      const store = yield* StateStore.make(StateStore.layerSqlite({ path: registry }))
      const held = yield* Election.leader(Master.defaults.leaderKey).pipe(Effect.provideService(StateStore.StateStore, store))
      expect(Option.isSome(held)).toBe(true)
      expect(JSON.parse(new TextDecoder().decode(Option.getOrThrow(held).value)).endpoint).toBe(first.endpoint)
      expect(gone).toContain(yield* ask(first.endpoint).pipe(Effect.flip, Effect.map((e) => e.code)))

      const next = yield* awaitLeader(cluster, first.name)
      expect(["master-2", "master-3"]).toContain(next.name)
      // The agent follows the new leader; the operator client does too.
      const state = yield* cluster.waitFor(
        "the agent at the new leader",
        (s) => s.master?.endpoint === next.endpoint && s.agents.length === 1 && s.agents[0]?.state === v1.Agent_State.ACTIVE,
        { timeout: 45_000 }
      )
      expect(state.agents[0]?.info?.agentId).toBe(cluster.agents[0]!.agentId)

      yield* first.restart
      const back = yield* ask(first.endpoint)
      expect(back.master?.endpoint).toBe(first.endpoint)
      expect(back.master?.leading).toBe(false)
      expect((yield* cluster.leader)?.name).toBe(next.name)
      expect(
        Scenarios.inOrder(cluster.events.texts(), ["master-1 SIGKILL", "master-1 restarted"]),
        cluster.events.format()
      ).toBe(true)
    }), 120_000)

  it.live("one master killed and restarted on its port: it leads again once its old lease lapses, the agent comes back", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, storage: "sqlite", master: { leaderLeaseSeconds: 2 } })
      const master = cluster.masters[0]!
      expect((yield* cluster.leader)?.name).toBe("master-1")
      yield* master.kill
      expect(yield* cluster.leader).toBeUndefined()
      expect(gone).toContain(yield* ask(master.endpoint).pipe(Effect.flip, Effect.map((e) => e.code)))
      yield* master.restart
      // Its previous life's lease still holds the leader key (a crash released nothing): it starts
      // as a standby and takes over when that lease expires.
      expect((yield* awaitLeader(cluster)).name).toBe("master-1")
      const state = yield* cluster.waitFor(
        "the agent back at the restarted master",
        (s) => s.agents.length === 1 && s.agents[0]?.state === v1.Agent_State.ACTIVE,
        { timeout: 45_000 }
      )
      expect(state.master?.endpoint).toBe(master.endpoint)
      expect(state.agents[0]?.info?.agentId).toBe(cluster.agents[0]!.agentId)
    }), 120_000)

  it.live("options several masters break are refused, naming the field and the rule", () =>
    Effect.gen(function*() {
      const refused = (options: TestCluster.Options) => TestCluster.make({ agents: 1, ...options }).pipe(Effect.scoped, Effect.flip)
      const memory = yield* refused({ masters: 2, storage: "memory" })
      expect(memory).toMatchObject({ _tag: "InvalidOptions", field: "storage" })
      expect(memory.message).toBe('TestCluster options: storage: several masters need a store they share: "sqlite" or "etcd"')
      const virtual = yield* refused({ masters: 2, clock: "virtual" })
      expect(virtual).toMatchObject({ _tag: "InvalidOptions", field: "clock" })
      expect(virtual.message).toContain("several masters need clock \"live\"")
      expect(yield* refused({ masters: 0 })).toMatchObject({ _tag: "InvalidOptions", field: "masters", rule: "must be an integer >= 1 (got 0)" })
      expect(yield* refused({ masters: 2, master: { httpPort: 9999 } })).toMatchObject({ _tag: "InvalidOptions", field: "master.httpPort" })
    }), 60_000)
})
