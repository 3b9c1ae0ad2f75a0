import { describe, expect, it } from "@effect/vitest"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { type Operator, TestCluster } from "@berth/testkit"
import { Effect, Fiber, Stream } from "effect"
import * as Framework from "./support/framework.ts"

const sleeper = (taskId: string, cpus = 0.5) =>
  v1.TaskInfo.create({
    name: taskId,
    taskId,
    resources: [Resources.scalar("cpus", cpus), Resources.scalar("mem", 32)],
    command: { shell: true, value: "exec sleep 120" },
    killPolicy: { gracePeriodSeconds: 5 }
  })

describe("operator API", () => {
  it.live("weights and quota: set, read back, enforced on offers, rejected when malformed", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2, agentResources: "cpus:4;mem:4096" })
      const operator = cluster.operator
      yield* operator.updateWeights({ role: "web", weight: 2.5 })
      yield* operator.updateQuota({ role: "web", limits: [Resources.scalar("cpus", 1.5), Resources.scalar("mem", 1024)] })
      expect((yield* operator.getWeights).weights).toContainEqual({ role: "web", weight: 2.5 })
      expect((yield* operator.getQuota).quotas.map((q) => [q.role, Resources.format(q.limits)])).toEqual([["web", "cpus:1.5;mem:1024"]])

      const framework = yield* Framework.open(cluster.master, "web-fw", { roles: ["web"] })
      const offer = yield* framework.nextOffer
      // The quota caps the whole role, not each offer: 1.5 cpus in total across both agents.
      yield* Effect.sleep("300 millis")
      const offered = Resources.sumScalar(
        (yield* cluster.operator.state).offers.flatMap((o) => o.resources),
        "cpus"
      )
      expect(offer.allocationRole).toBe("web")
      expect(offered).toBeLessThanOrEqual(1.5)
      const roles = (yield* operator.getRoles).roles
      const web = roles.find((r) => r.name === "web")!
      expect(web.weight).toBe(2.5)
      expect(web.frameworkIds).toEqual([framework.frameworkId])
      expect(Resources.sumScalar(web.allocated, "cpus")).toBeLessThanOrEqual(1.5)

      const bad: Array<[Effect.Effect<void, Operator.OperatorError>, string, RegExp]> = [
        [operator.updateWeights({ role: "web", weight: 0 }), "weight", /> 0/],
        [operator.updateWeights({ role: "web", weight: Number.NaN }), "weight", /finite/],
        [operator.updateWeights({ role: "bad role", weight: 1 }), "role", /must be/],
        [operator.updateQuota({ role: "web", limits: [Resources.ranges("ports", [[1, 2]])] }), "limits[0]", /scalar resources only/],
        [operator.updateQuota({ role: "web", limits: [Resources.scalar("cpus", -1)] }), "limits[0].scalar", />= 0/],
        [operator.updateQuota({ role: "web", limits: [Resources.scalar("cpus", 1), Resources.scalar("cpus", 2)] }), "limits[1].name", /twice/],
        [operator.drainAgent({ agentId: "nope", markGone: false }), "agentId", /no agent/],
        [operator.markAgentGone("nope"), "agentId", /no agent/]
      ]
      for (const [attempt, field, rule] of bad) {
        const error = yield* Effect.flip(attempt)
        expect(error.field, error.message).toBe(field)
        expect(error.rule).toMatch(rule)
      }
      // And nothing changed.
      expect((yield* operator.getWeights).weights).toContainEqual({ role: "web", weight: 2.5 })
      expect((yield* operator.getQuota).quotas.map((q) => Resources.format(q.limits))).toEqual(["cpus:1.5;mem:1024"])
    }))

  it.live("drain: the agent's tasks are killed with REASON_AGENT_DRAINING, it gets no offers, reactivate brings it back", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:2;mem:1024" })
      const framework = yield* Framework.open(cluster.master)
      const offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [Framework.launch([sleeper("a"), sleeper("b")])])
      yield* framework.awaitState("a", v1.TaskState.RUNNING)
      yield* framework.awaitState("b", v1.TaskState.RUNNING)

      yield* cluster.operator.drainAgent({ agentId: cluster.agents[0]!.agentId, maxGracePeriodSeconds: 0.5, markGone: false })
      for (const id of ["a", "b"]) {
        const killed = yield* framework.awaitState(id, v1.TaskState.KILLED)
        expect(killed.reason).toBe(v1.TaskStatus_Reason.AGENT_DRAINING)
      }
      const drained = yield* cluster.waitFor("the agent to be drained", (s) => s.agents[0]?.state === v1.Agent_State.DRAINED)
      expect(drained.offers).toEqual([])
      yield* framework.session.revive()
      yield* Effect.sleep("300 millis")
      expect((yield* cluster.operator.state).offers).toEqual([])

      yield* cluster.operator.reactivateAgent(cluster.agents[0]!.agentId)
      const back = yield* framework.nextOffer
      expect(back.agentId).toBe(cluster.agents[0]!.agentId)
    }))

  it.live("operator reservations: reserved resources go to their role only, survive in the agent's resources, and can be released", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:4;mem:4096;disk:1024" })
      const agentId = cluster.agents[0]!.agentId
      const reservation: v1.ReservationInfo = { type: v1.ReservationInfo_Type.DYNAMIC, role: "db", principal: "", labels: { labels: [{ key: "by", value: "ops" }] } }
      const reserved = [Resources.scalar("cpus", 3), Resources.scalar("mem", 1024)].map((r) => ({ ...r, reservations: [reservation] }))

      const tooMuch = yield* Effect.flip(cluster.operator.reserveResources({ agentId, resources: [{ ...Resources.scalar("cpus", 64), reservations: [reservation] }] }))
      expect([tooMuch.field, tooMuch.rule]).toEqual(["resources", expect.stringMatching(/^needs cpus:64 free on agent/)])
      const unreservedInput = yield* Effect.flip(cluster.operator.reserveResources({ agentId, resources: [Resources.scalar("cpus", 1)] }))
      expect(unreservedInput.field).toBe("resources[0].reservations")

      yield* cluster.operator.reserveResources({ agentId, resources: reserved })
      const state = yield* cluster.operator.state
      expect(Resources.format(state.agents[0]!.info!.resources)).toBe("cpus:1;cpus(db):3;mem:3072;mem(db):1024;disk:1024;ports:[31000-32000]")

      // Only the db role sees them.
      const web = yield* Framework.open(cluster.master, "web", { roles: ["web"] })
      const webOffer = yield* web.nextOffer
      expect(Resources.sumScalar(webOffer.resources, "cpus")).toBe(1)
      const db = yield* Framework.open(cluster.master, "db", { roles: ["db"] })
      const dbOffer = yield* db.nextOffer
      expect(Resources.format(dbOffer.resources.filter((r) => r.reservations.length > 0))).toBe("cpus(db):3;mem(db):1024")

      yield* db.session.decline([dbOffer.offerId], { refuseSeconds: 0 })
      yield* web.session.decline([webOffer.offerId], { refuseSeconds: 0 })
      yield* cluster.operator.unreserveResources({ agentId, resources: reserved })
      const after = yield* cluster.operator.state
      expect(after.agents[0]!.info!.resources.every((r) => r.reservations.length === 0)).toBe(true)
    }))

  it.live("mark gone: tasks become GONE_BY_OPERATOR and the agent may not register again", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const framework = yield* Framework.open(cluster.master)
      const offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [Framework.launch([sleeper("g")])])
      yield* framework.awaitState("g", v1.TaskState.RUNNING)
      const agentId = cluster.agents[0]!.agentId
      yield* cluster.operator.markAgentGone(agentId)
      const gone = yield* framework.awaitState("g", v1.TaskState.GONE_BY_OPERATOR)
      expect(gone.reason).toBe(v1.TaskStatus_Reason.AGENT_REMOVED)
      const state = yield* cluster.operator.state
      expect(state.agents).toEqual([])
      expect(state.tasks.find((t) => t.info?.taskId === "g")?.state).toBe(v1.TaskState.GONE_BY_OPERATOR)
      // The agent process is still alive and keeps trying to re-register under its id: refused.
      yield* Effect.sleep("1 second")
      expect((yield* cluster.operator.state).agents).toEqual([])
    }))

  it.live("watch events: a snapshot, then tasks added and updated as they happen", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const seen: Array<string> = []
      const watcher = yield* cluster.operator.events.pipe(
        Stream.tap((event) =>
          Effect.sync(() => {
            if (event.$case === "taskAdded") seen.push(`added ${event.value.task?.info?.taskId}`)
            else if (event.$case === "taskUpdated") seen.push(`${event.value.status?.taskId} ${TaskStates.name(event.value.state)}`)
            else if (event.$case !== "heartbeat") seen.push(event.$case)
          })
        ),
        Stream.takeUntil(() => seen.includes("w FINISHED")),
        Stream.runDrain,
        Effect.forkScoped
      )
      const framework = yield* Framework.open(cluster.master)
      const offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        Framework.launch([v1.TaskInfo.create({ taskId: "w", resources: [Resources.scalar("cpus", 0.1)], command: { shell: true, value: "true" } })])
      ])
      yield* Fiber.join(watcher).pipe(Effect.timeout("10 seconds"))
      expect(seen[0]).toBe("snapshot")
      expect(seen).toContain("frameworkAdded")
      expect(seen.indexOf("added w")).toBeGreaterThan(0)
      // TaskAdded stands for STAGING; the agent's updates follow.
      expect(seen.filter((s) => s.startsWith("w ") || s === "added w")).toEqual(["added w", "w STARTING", "w RUNNING", "w FINISHED"])
    }))
})

