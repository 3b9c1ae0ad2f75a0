/**
 * The offer manager against a real in-process cluster (master, agents, real tasks).
 */
import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { OfferManager, Requirement } from "@berth/sdk-scheduler"
import { StateStore } from "@berth/storage"
import { TestCluster } from "@berth/testkit"
import { Effect, Option } from "effect"
import { eventually, startStack } from "./OfferManager.harness.ts"

const work = (id: string, extra: Partial<Requirement.Encoded> = {}, onPlaced?: OfferManager.Work["onPlaced"]): OfferManager.Work => ({
  request: {
    requirement: Requirement.decodeSync({ id, group: "web", resources: { cpus: 0.25, mem: 32 }, ...extra }),
    task: { command: { value: "sleep 600", shell: true, arguments: [], environment: [], uris: [], user: "" } }
  },
  ...(onPlaced === undefined ? {} : { onPlaced })
})

const running = (state: v1.GetStateResponse, prefix: string) =>
  state.tasks.filter((t) => (t.info?.taskId ?? "").startsWith(prefix) && t.state === v1.TaskState.RUNNING)

describe("OfferManager on a real cluster", () => {
  it.live("launches several tasks on one offer and calls onPlaced before the Accept", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, master: { allocationIntervalMs: 100 } })
      const store = yield* StateStore.make(StateStore.layerMemory)
      const stack = yield* startStack({ master: cluster.master, store, lifecycle: false })
      const placedOn: Array<string> = []
      yield* stack.offers.submit(["w-0", "w-1", "w-2"].map((id) =>
        work(id, {}, (placed) =>
          Effect.sync(() => {
            placedOn.push(`${placed.requirementId}@${placed.offerId}`)
          }))
      ))
      const state = yield* cluster.waitFor("3 tasks running", (s) => running(s, "w-").length === 3)
      expect(new Set(running(state, "w-").map((t) => t.agentId)).size).toBe(1)
      // One offer (one agent, one allocation) carried all three.
      expect(new Set(placedOn.map((p) => p.split("@")[1])).size).toBe(1)
      expect(yield* stack.offers.pending).toEqual([])
      const snapshot = yield* stack.offers.snapshot
      expect(snapshot.counters.offersAccepted).toBe(1)
    }), 60_000)

  it.live("counts running tasks from sources registered after it was built (hostname:UNIQUE across batches)", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2, master: { allocationIntervalMs: 100 } })
      const store = yield* StateStore.make(StateStore.layerMemory)
      // With the lifecycle: it registers its running tasks with the manager after the manager exists.
      const stack = yield* startStack({ master: cluster.master, store })
      const unique = { constraints: [["hostname", "UNIQUE"]] } as Partial<Requirement.Encoded>
      yield* stack.tasks!.launch([{ request: work("u-0", unique).request }])
      yield* cluster.waitFor("u-0 running", (s) => running(s, "u-0").length === 1)
      // Placed in a later batch: only the registered source says where u-0 runs.
      yield* stack.tasks!.launch([{ request: work("u-1", unique).request }])
      const state = yield* cluster.waitFor("u-1 running", (s) => running(s, "u-1").length === 1)
      expect(running(state, "u-1")[0]!.agentId).not.toBe(running(state, "u-0")[0]!.agentId)
      // A third fits nowhere, and the manager says it is the constraint.
      yield* stack.tasks!.launch([{ request: work("u-2", unique).request }])
      const why = yield* eventually(
        "u-2 rejected on both agents by the constraint",
        Effect.map(stack.offers.whyNot("u-2"), (r) =>
          Option.isSome(r) && new Set(r.value.recent.filter((x) => x.stage === "constraints").map((x) => x.agentId)).size === 2 ? r.value : undefined)
      )
      expect(why.recent.some((x) => /hostname:UNIQUE/.test(x.reason))).toBe(true)
    }), 60_000)

  it.live("suppresses offers when idle and revives them when work arrives", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2, master: { allocationIntervalMs: 100 } })
      const store = yield* StateStore.make(StateStore.layerMemory)
      // A short idle filter: without Suppress the agents would be offered again every few allocations.
      const stack = yield* startStack({ master: cluster.master, store, lifecycle: false, offers: { reviveInterval: "200 millis", refuseSecondsIdle: 0.2 } })
      // Nothing pending: the manager suppresses.
      yield* eventually("suppressed", Effect.map(stack.offers.snapshot, (s) => (s.suppressed ? s : undefined)))
      const before = (yield* stack.offers.snapshot).counters
      // Many allocation rounds pass without an offer to this framework.
      yield* Effect.sleep("1500 millis")
      const idle = yield* stack.offers.snapshot
      expect(idle.counters.offersReceived).toBe(before.offersReceived)
      const frameworkId = yield* stack.session.frameworkId
      const state = yield* cluster.operator.state
      expect(state.offers.filter((o) => o.frameworkId === frameworkId)).toEqual([])
      // New work revives.
      yield* stack.offers.submit([work("late-0")])
      yield* cluster.waitFor("late-0 running", (s) => running(s, "late-0").length === 1)
      const after = yield* stack.offers.snapshot
      expect(after.counters.revives).toBeGreaterThanOrEqual(1)
      expect(after.counters.offersReceived).toBeGreaterThan(idle.counters.offersReceived)
      // And suppresses again once the work is placed.
      yield* eventually("suppressed again", Effect.map(stack.offers.snapshot, (s) => (s.suppressed ? s : undefined)))
    }), 60_000)

  it.live("records, per agent, the stage and reason that rejected a requirement that fits nowhere", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 3, master: { allocationIntervalMs: 100 } })
      const store = yield* StateStore.make(StateStore.layerMemory)
      const stack = yield* startStack({ master: cluster.master, store, lifecycle: false })
      yield* stack.offers.submit([work("huge-0", { resources: { cpus: 64, mem: 32 } }), work("picky-0", { constraints: [["hostname", "LIKE", "nowhere-.*"]] })])
      const huge = yield* eventually(
        "huge-0 rejected by every agent",
        Effect.map(stack.offers.whyNot("huge-0"), (r) => Option.isSome(r) && new Set(r.value.recent.map((x) => x.agentId)).size === 3 ? r.value : undefined)
      )
      expect(new Set(huge.recent.map((r) => r.agentId))).toEqual(new Set(cluster.agents.map((a) => a.agentId)))
      for (const r of huge.recent) {
        expect(r.stage).toBe("resources")
        expect(r.reason).toMatch(/cpus/)
      }
      expect(huge.summary).toEqual({ resources: 3 })
      expect(huge.evaluations).toBeGreaterThanOrEqual(1)
      const picky = yield* eventually(
        "picky-0 rejected by every agent",
        Effect.map(stack.offers.whyNot("picky-0"), (r) => Option.isSome(r) && r.value.recent.length === 3 ? r.value : undefined)
      )
      for (const r of picky.recent) {
        expect(r.stage).toBe("constraints")
        expect(r.reason).toContain("hostname:LIKE")
      }
      // The snapshot lists both as pending, and nothing of them runs.
      const snapshot = yield* stack.offers.snapshot
      expect(snapshot.pending.map((p) => p.requirementId).sort()).toEqual(["huge-0", "picky-0"])
      expect((yield* cluster.operator.state).tasks).toEqual([])
      // Withdrawn work has no record.
      yield* stack.offers.withdraw(["huge-0"])
      expect(Option.isNone(yield* stack.offers.whyNot("huge-0"))).toBe(true)
    }), 60_000)
})
