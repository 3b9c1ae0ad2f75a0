// The scheduler core against a fake cluster and a controlled clock: unreachable tasks and the
// unreachableStrategy, killSelection on scale-down, and the decline/accept calls it makes.
import { describe, expect, it } from "@effect/vitest"
import { Resources, v1 } from "@berth/proto"
import { StateStore } from "@berth/storage"
import { Effect, Result } from "effect"
import * as AppDefinition from "../src/AppDefinition.ts"
import { Core } from "../src/internal/core.ts"
import { EventBus } from "../src/internal/events.ts"

const setup = Effect.gen(function*() {
  const store = yield* StateStore.make(StateStore.layerMemory)
  let now = 1_000_000
  const calls: Array<{ call: string; arg: unknown }> = []
  const core = new Core({ store, events: new EventBus(10_000, () => now), role: "marathon", principal: "test", now: () => now })
  core.attach({
    accept: (offerIds, operations) => Effect.sync(() => calls.push({ call: "accept", arg: { offerIds, operations } })),
    decline: (offerIds) => Effect.sync(() => void calls.push({ call: "decline", arg: offerIds })),
    kill: (taskId) => Effect.sync(() => void calls.push({ call: "kill", arg: taskId })),
    reconcile: () => Effect.void,
    revive: () => Effect.void
  })
  let n = 0
  const offer = (agent: string) => v1.Offer.create({
    offerId: `o${n++}`, agentId: agent, hostname: `${agent}.test`,
    resources: [Resources.scalar("cpus", 4), Resources.scalar("mem", 4096), Resources.ranges("ports", [[31000, 31100]])]
  })
  const status = (taskId: string, state: v1.TaskState) => v1.TaskStatus.create({ taskId, state, agentId: "a1" })
  const app = (body: Record<string, unknown>) => Result.getOrThrow(AppDefinition.decode(body, new Date(now).toISOString()))
  const running = () => [...core.instances.values()].filter((i) => i.state === "TASK_RUNNING" && !i.killing).map((i) => i.taskId)
  /** Launches what the app wants on one offer and reports every new task RUNNING. */
  const launchAll = (agent = "a1") => Effect.gen(function*() {
    yield* core.converge
    const before = new Set(core.instances.keys())
    yield* core.handleOffers([offer(agent)])
    const fresh = [...core.instances.values()].filter((i) => !before.has(i.instanceId))
    yield* core.handleStatuses(fresh.map((i) => status(i.taskId, v1.TaskState.RUNNING)))
    yield* core.converge
    return fresh.map((i) => i.taskId)
  })
  return { core, calls, app, launchAll, status, running, tick: (ms: number) => { now += ms } }
})

describe("Core", () => {
  it.effect("replaces an unreachable task after inactiveAfterSeconds, and kills it if it comes back", () =>
    Effect.gen(function*() {
      const { core, app, launchAll, status, running, tick, calls } = yield* setup
      yield* core.deploy("/u", app({ id: "/u", cmd: "x", cpus: 0.1, mem: 16, unreachableStrategy: { inactiveAfterSeconds: 10, expungeAfterSeconds: 60 } }), "StartApplication", false)
      const [first] = yield* launchAll()
      expect(running()).toEqual([first])
      yield* core.handleStatuses([status(first!, v1.TaskState.UNREACHABLE)])
      tick(5_000)
      yield* core.converge
      expect(core.wanted.get("/u")).toBe(0)
      tick(6_000)
      yield* core.converge
      expect(core.wanted.get("/u")).toBe(1)
      const [second] = yield* launchAll()
      expect(second).not.toBe(first)
      // The first comes back before being expunged: one too many, the scheduler kills one.
      yield* core.handleStatuses([status(first!, v1.TaskState.RUNNING)])
      yield* core.converge
      expect(calls.filter((c) => c.call === "kill").map((c) => c.arg)).toHaveLength(1)
      expect(running()).toHaveLength(1)
    }))

  it.effect("forgets an unreachable task after expungeAfterSeconds; if it comes back it is killed as unknown", () =>
    Effect.gen(function*() {
      const { core, app, launchAll, status, tick, calls } = yield* setup
      yield* core.deploy("/e", app({ id: "/e", cmd: "x", cpus: 0.1, mem: 16, unreachableStrategy: { inactiveAfterSeconds: 1, expungeAfterSeconds: 30 } }), "StartApplication", false)
      const [first] = yield* launchAll()
      yield* core.handleStatuses([status(first!, v1.TaskState.UNREACHABLE)])
      tick(31_000)
      yield* core.converge
      expect([...core.instances.values()].map((i) => i.taskId)).not.toContain(first)
      yield* core.handleStatuses([status(first!, v1.TaskState.RUNNING)])
      expect(calls.filter((c) => c.call === "kill").map((c) => c.arg)).toEqual([first])
    }))

  it.effect("never replaces an unreachable task of a resident app (unreachableStrategy disabled)", () =>
    Effect.gen(function*() {
      const { core, app, status, tick } = yield* setup
      const resident = app({ id: "/r", cmd: "x", cpus: 0.1, mem: 16, container: { volumes: [{ containerPath: "data", persistent: { size: 10 } }] } })
      expect(resident.unreachableStrategy).toBe("disabled")
      yield* core.deploy("/r", resident, "StartApplication", false)
      yield* core.converge
      yield* core.handleOffers([v1.Offer.create({ offerId: "o", agentId: "a1", hostname: "h", allocationRole: "marathon", resources: [Resources.scalar("cpus", 4, "marathon"), Resources.scalar("mem", 4096, "marathon"), Resources.scalar("disk", 1000, "marathon"), Resources.ranges("ports", [[31000, 31100]], "marathon")] })])
      const task = [...core.instances.values()][0]!
      yield* core.handleStatuses([status(task.taskId, v1.TaskState.RUNNING)])
      yield* core.handleStatuses([status(task.taskId, v1.TaskState.UNREACHABLE)])
      tick(3_600_000)
      yield* core.converge
      expect(core.wanted.get("/r")).toBe(0)
      expect(core.instances.size).toBe(1)
    }))

  it.effect("scales down by killSelection, and declines offers it does not need", () =>
    Effect.gen(function*() {
      const { core, app, launchAll, tick, calls } = yield* setup
      const def = app({ id: "/k", cmd: "x", cpus: 0.1, mem: 16, instances: 1, killSelection: "OLDEST_FIRST" })
      yield* core.deploy("/k", def, "StartApplication", false)
      const [oldest] = yield* launchAll()
      tick(1000)
      yield* core.deploy("/k", { ...def, instances: 2 }, "ScaleApplication", true)
      const [youngest] = yield* launchAll()
      yield* core.deploy("/k", { ...def, instances: 1 }, "ScaleApplication", true)
      yield* core.converge
      expect(calls.filter((c) => c.call === "kill").map((c) => c.arg)).toEqual([oldest])
      expect(youngest).toBeDefined()
      yield* core.handleOffers([v1.Offer.create({ offerId: "spare", agentId: "a2", hostname: "h2", resources: [Resources.scalar("cpus", 1)] })])
      expect(calls.at(-1)).toEqual({ call: "decline", arg: ["spare"] })
    }))
})

describe("Core launch slices", () => {
  it.effect("matches a big launch in slices of 200, each on offers no earlier slice used", () =>
    Effect.gen(function*() {
      const { core, app, calls } = yield* setup
      yield* core.deploy("/big", app({ id: "/big", cmd: "x", cpus: 0.01, mem: 1, instances: 450, portDefinitions: [] }), "StartApplication", false)
      yield* core.converge
      expect(core.wanted.get("/big")).toBe(450)
      const big = (n: number) => v1.Offer.create({ offerId: `big-${n}`, agentId: `a${n}`, hostname: `h${n}`, resources: [Resources.scalar("cpus", 64), Resources.scalar("mem", 65536)] })
      yield* core.handleOffers([big(1), big(2), big(3), big(4)])
      const accepts = calls.filter((c) => c.call === "accept").map((c) => c.arg as { offerIds: Array<string>; operations: Array<v1.Operation> })
      // Bin-packing would put all 450 on one offer; slices spread them 200 / 200 / 50.
      expect(accepts.map((a) => a.offerIds[0])).toEqual(["big-1", "big-2", "big-3"])
      expect(accepts.map((a) => a.operations.filter((o) => o.kind?.$case === "launch").length)).toEqual([200, 200, 50])
      expect(core.instances.size).toBe(450)
      expect(core.wanted.get("/big")).toBe(0)
      expect(calls.filter((c) => c.call === "decline").map((c) => c.arg)).toEqual([["big-4"]])
      // One offer: the first slice takes it; the rest wait for the next offers.
      yield* core.deploy("/more", app({ id: "/more", cmd: "x", cpus: 0.01, mem: 1, instances: 300, portDefinitions: [] }), "StartApplication", false)
      yield* core.converge
      yield* core.handleOffers([big(5)])
      expect(core.instancesOf("/more")).toHaveLength(200)
      expect(core.wanted.get("/more")).toBe(100)
    }))
})
