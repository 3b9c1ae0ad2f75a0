/**
 * Faults through the fault-injecting proxy (issue 7, scope 3) and virtual time (scope 5) on the
 * in-process backend: a partition makes the agent UNREACHABLE and healing brings it back; dropped
 * status updates are resent until acknowledged; duplicated ones never move a task backwards at the
 * scheduler; a week-long failover timeout passes under `cluster.advance`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { SchedulerSession } from "@berth/sdk-scheduler"
import { TestCluster } from "@berth/testkit"
import { Context, Effect, Exit, Layer, Queue, Scope, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Framework from "../../../test/support/framework.ts"

const { TaskState } = v1

const task = (taskId: string, command: string) =>
  v1.TaskInfo.create({
    taskId,
    name: taskId,
    resources: [Resources.scalar("cpus", 0.1), Resources.scalar("mem", 16)],
    command: { shell: true, value: command }
  })

const within = <A, E, R>(what: string, ms: number, effect: Effect.Effect<A, E, R>) =>
  effect.pipe(Effect.timeoutOrElse({ duration: ms, orElse: () => Effect.die(new Error(`timed out after ${ms} ms: ${what}`)) }))

/** Launches `tasks` from the first offer of `agentId` (any agent when undefined). */
const launchOn = (framework: Framework.TestFramework, tasks: ReadonlyArray<v1.TaskInfo>, agentId?: string) =>
  within("an offer", 20_000, Effect.gen(function*() {
    while (true) {
      const offer = yield* framework.nextOffer
      if (agentId !== undefined && offer.agentId !== agentId) continue
      yield* framework.session.accept([offer.offerId], [Framework.launch(tasks)])
      return offer.agentId
    }
  }))

const alive = (pid: number) => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z"
  } catch {
    return false
  }
}

const taskState = (state: v1.GetStateResponse, taskId: string) => state.tasks.find((t) => t.info?.taskId === taskId)?.state

describe("faults through the proxy", () => {
  it.live("a partition makes the agent UNREACHABLE; healed, its task is RUNNING again", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2, master: { agentPingSeconds: 0.5, agentPingMisses: 2 } })
      const framework = yield* Framework.open(cluster.master)
      const agent = cluster.agents[0]!
      yield* launchOn(framework, [task("p1", "exec sleep 60")], agent.agentId)
      yield* within("RUNNING", 20_000, framework.awaitState("p1", TaskState.RUNNING))

      yield* agent.partition
      yield* within("UNREACHABLE", 20_000, framework.awaitState("p1", TaskState.UNREACHABLE))
      const cut = yield* cluster.waitFor("the agent unreachable", (s) =>
        s.agents.find((a) => a.info?.agentId === agent.agentId)?.state === v1.Agent_State.UNREACHABLE)
      expect(taskState(cut, "p1")).toBe(TaskState.UNREACHABLE)
      expect(agent.link()!.refused).toBeGreaterThan(0)

      yield* agent.heal
      const healed = yield* cluster.waitFor("the task RUNNING again", (s) =>
        taskState(s, "p1") === TaskState.RUNNING &&
        s.agents.find((a) => a.info?.agentId === agent.agentId)?.state === v1.Agent_State.ACTIVE)
      expect(healed.tasks.filter((t) => t.info?.taskId === "p1")).toHaveLength(1)
      const texts = cluster.events.texts()
      expect(texts).toContain("agent-1 partitioned from the masters")
      expect(texts).toContain("agent-1 partition healed")
    }), 60_000)

  it.live("dropped status updates are resent until acknowledged (at least once)", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, statusUpdateRetrySeconds: 0.2 })
      const framework = yield* Framework.open(cluster.master)
      const agent = cluster.agents[0]!
      // Every update the agent sends first is lost: STARTING, RUNNING and FINISHED each need a resend.
      yield* cluster.faults.statusUpdates({ drop: { next: 3 } })
      yield* launchOn(framework, [task("d1", "sleep 0.3")])
      yield* within("FINISHED", 30_000, framework.awaitState("d1", TaskState.FINISHED))
      const stats = agent.link()!
      expect(stats.dropped).toBe(3)
      expect(stats.forwarded).toBeGreaterThanOrEqual(1)
      // The agent holds nothing unacknowledged once the scheduler has acknowledged everything.
      yield* within("no pending updates", 20_000, Effect.gen(function*() {
        while (agent.pendingUpdates() > 0) yield* Effect.sleep("50 millis")
      }))
      const states = framework.updates.filter((s) => s.taskId === "d1").map((s) => s.state)
      expect(states).toContain(TaskState.RUNNING)
      expect(states.at(-1)).toBe(TaskState.FINISHED)
      expect(cluster.events.texts().filter((t) => t.startsWith("agent-1 proxy dropped status update d1"))).toHaveLength(3)
    }), 60_000)

  it.live("duplicated and delayed updates never move a task backwards at the scheduler", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, statusUpdateRetrySeconds: 0.2 })
      yield* cluster.faults.statusUpdates({ duplicate: 1, delayMs: 20 })
      // A scheduler on SchedulerSession itself, recording every update in arrival order.
      const context = yield* Layer.build(SchedulerSession.layer({ master: cluster.master, framework: { name: "dups" } }))
      const session = Context.get(context, SchedulerSession.SchedulerSession)
      const offers = yield* Queue.unbounded<v1.Offer>()
      const seen: Array<v1.TaskStatus> = []
      yield* session.events.pipe(
        Stream.runForEach((event) =>
          Effect.gen(function*() {
            if (event.$case === "offers") for (const o of event.value.offers) Queue.offerUnsafe(offers, o)
            if (event.$case === "update") {
              for (const status of event.value.statuses) {
                seen.push(status)
                yield* session.acknowledge(status)
              }
            }
          })
        ),
        Effect.forkScoped
      )
      const offer = yield* within("an offer", 20_000, Queue.take(offers))
      yield* session.accept([offer.offerId], [Framework.launch([task("u1", "sleep 0.3"), task("u2", "exit 3")])])
      yield* within("both terminal", 30_000, Effect.gen(function*() {
        while (!["u1", "u2"].every((id) => seen.some((s) => s.taskId === id && TaskStates.isTerminal(s.state)))) {
          yield* Effect.sleep("50 millis")
        }
      }))
      // Give late duplicates time to arrive, then check nothing after a terminal update.
      yield* Effect.sleep("1 second")
      const link = cluster.agents[0]!.link()!
      expect(link.duplicated).toBeGreaterThan(0)
      expect(link.delayed).toBeGreaterThan(0)
      for (const id of ["u1", "u2"]) {
        const states = seen.filter((s) => s.taskId === id).map((s) => s.state)
        const firstTerminal = states.findIndex((s) => TaskStates.isTerminal(s))
        expect(states.slice(firstTerminal).every((s) => s === states[firstTerminal])).toBe(true)
      }
      const state = yield* cluster.operator.state
      expect(taskState(state, "u1")).toBe(TaskState.FINISHED)
      expect(taskState(state, "u2")).toBe(TaskState.FAILED)
    }), 60_000)

  it.live("bad fault rules are refused with the field named, and change nothing", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const error = yield* cluster.faults.statusUpdates({ drop: 1.5 }).pipe(Effect.flip)
      expect(error.message).toBe("TestCluster options: statusUpdates.drop: must be a probability in [0, 1] (got 1.5)")
      const next = yield* cluster.agents[0]!.statusUpdates({ duplicate: { next: -1 } }).pipe(Effect.flip)
      expect(next.message).toContain("statusUpdates.duplicate.next: must be an integer >= 0")
      const noProxy = yield* TestCluster.make({ agents: 1, proxy: false })
      const unsupported = yield* noProxy.agents[0]!.partition.pipe(Effect.flip)
      expect(unsupported._tag).toBe("UnsupportedFault")
    }), 60_000)
})

describe("in-process agent crashes", () => {
  it.live("a killed agent's task runs on, a restarted agent re-attaches to it, and it dies with the cluster", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const cluster = yield* TestCluster.make({ agents: 1 }).pipe(Scope.provide(scope))
      const framework = yield* Framework.open(cluster.master).pipe(Scope.provide(scope))
      const agent = cluster.agents[0]!
      yield* launchOn(framework, [task("k1", "echo $$ > pid; exec sleep 120")])
      yield* within("RUNNING", 20_000, framework.awaitState("k1", TaskState.RUNNING))
      const pidFile = path.join(agent.workDir, "frameworks", framework.frameworkId, "executors", "k1", "runs", "latest", "pid")
      const pid = yield* within("the pid", 10_000, Effect.gen(function*() {
        while (!(fs.existsSync(pidFile) && fs.readFileSync(pidFile, "utf8").endsWith("\n"))) yield* Effect.sleep("20 millis")
        return Number(fs.readFileSync(pidFile, "utf8"))
      }))

      yield* agent.kill
      expect(alive(pid)).toBe(true)
      yield* agent.restart
      const state = yield* cluster.waitFor("the agent back with its task", (s) =>
        s.agents[0]?.state === v1.Agent_State.ACTIVE && taskState(s, "k1") === TaskState.RUNNING)
      expect(state.agents.map((a) => a.info?.agentId)).toEqual([agent.agentId])
      expect(framework.updates.filter((u) => TaskStates.isTerminal(u.state))).toEqual([])
      expect(alive(pid)).toBe(true)

      yield* Scope.close(scope, Exit.void)
      yield* within("the task to die with the cluster", 10_000, Effect.gen(function*() {
        while (alive(pid)) yield* Effect.sleep("20 millis")
      }))
    }), 60_000)
})

describe("virtual time", () => {
  it.live("a framework with a one-week failover timeout is torn down after a week, not after six days", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2, clock: "virtual" })
      const startedAt = cluster.now()
      let frameworkId = ""
      yield* Effect.scoped(Effect.gen(function*() {
        const framework = yield* Framework.open(cluster.master, "week", { failoverTimeoutSeconds: 7 * 86400 })
        frameworkId = framework.frameworkId
        yield* launchOn(framework, [task("w1", "exec sleep 120")])
        yield* within("RUNNING", 20_000, framework.awaitState("w1", TaskState.RUNNING))
      }))
      // The scheduler is gone: its failover timeout runs from now.
      yield* cluster.waitFor("the framework disconnected", (s) => s.frameworks.some((f) => f.info?.frameworkId === frameworkId && !f.connected))

      yield* cluster.advance("6 days", { step: "12 hours" })
      expect(cluster.now() - startedAt).toBeGreaterThanOrEqual(6 * 86400_000)
      const after6 = yield* cluster.operator.state
      expect(after6.frameworks.map((f) => f.info?.frameworkId)).toContain(frameworkId)
      expect(taskState(after6, "w1")).toBe(TaskState.RUNNING)
      // The agents stayed reachable across the jump: their pings arrived in virtual time too.
      expect(after6.agents.map((a) => a.state)).toEqual([v1.Agent_State.ACTIVE, v1.Agent_State.ACTIVE])

      yield* cluster.advance("1 day")
      const after7 = yield* cluster.waitFor("the framework torn down", (s) =>
        !s.frameworks.some((f) => f.info?.frameworkId === frameworkId))
      expect(after7.tasks.filter((t) => t.info?.taskId === "w1" && !TaskStates.isTerminal(t.state))).toEqual([])
      expect(cluster.events.texts()).toContain("framework week removed")
    }), 60_000)

  it.live("advance needs clock: virtual; the processes backend refuses virtual time", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const error = yield* cluster.advance("1 hour").pipe(Effect.flip)
      expect(error._tag).toBe("UnsupportedFault")
      const invalid = yield* TestCluster.make({ backend: "processes", clock: "virtual" }).pipe(Effect.flip)
      expect(invalid.message).toContain("clock: virtual time needs backend \"in-process\"")
    }), 60_000)
})
