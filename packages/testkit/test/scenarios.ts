/**
 * The scenario suite of issue 7, written once for every backend: each scenario is the options it
 * needs and a function of a started cluster. A backend's test file runs them with
 *
 * ```ts
 * it.live(scenario.name, () =>
 *   Effect.flatMap(TestCluster.make({ ...scenario.options, backend }), scenario.run), scenario.timeoutMs)
 * ```
 *
 * A scenario uses only the public `TestCluster` API (faults, `waitFor`, the event log, the
 * operator client) and a real framework (`test/support/framework.ts`) talking to `cluster.master`,
 * so what it asserts holds on every backend that supports its faults.
 */
import { expect } from "@effect/vitest"
import { Resources, TaskStates, v1 } from "@berth/proto"
import type { TestCluster } from "@berth/testkit"
import { Effect, type Scope } from "effect"
import * as Framework from "../../../test/support/framework.ts"

const { TaskState } = v1

export interface Scenario {
  readonly name: string
  /** What the scenario needs of the cluster (a backend is added by the caller). */
  readonly options: TestCluster.Options
  readonly run: (cluster: TestCluster.TestCluster) => Effect.Effect<void, unknown, Scope.Scope>
  /** A vitest timeout that leaves room for slow machines (containers included). */
  readonly timeoutMs: number
}

export const within = <A, E, R>(what: string, ms: number, effect: Effect.Effect<A, E, R>) =>
  effect.pipe(Effect.timeoutOrElse({ duration: ms, orElse: () => Effect.die(new Error(`timed out after ${ms} ms: ${what}`)) }))

/** A shell task; `command` runs in its sandbox. */
export const task = (taskId: string, command: string) =>
  v1.TaskInfo.create({
    taskId,
    name: taskId,
    resources: [Resources.scalar("cpus", 0.25), Resources.scalar("mem", 32)],
    command: { shell: true, value: command }
  })

/**
 * Launches one task per agent (`<prefix><k>` on the k-th agent of `agentIds`), from offers as they
 * come, and waits until each is RUNNING (or already finished, for short tasks).
 */
export const launchOnEach = (
  framework: Framework.TestFramework,
  agentIds: ReadonlyArray<string>,
  command: string,
  prefix = "t"
) =>
  within(
    "offers from every agent",
    30_000,
    Effect.gen(function*() {
      const placed = new Map<string, string>()
      while (placed.size < agentIds.length) {
        const offer = yield* framework.nextOffer
        const index = agentIds.indexOf(offer.agentId)
        if (index < 0 || [...placed.values()].includes(offer.agentId)) continue
        const taskId = `${prefix}${index + 1}`
        yield* framework.session.accept([offer.offerId], [Framework.launch([task(taskId, command)])])
        placed.set(taskId, offer.agentId)
      }
      return [...placed.keys()].sort()
    })
  )

export const running = (state: v1.GetStateResponse, taskIds: ReadonlyArray<string>) =>
  taskIds.every((id) => state.tasks.some((t) => t.info?.taskId === id && t.state === TaskState.RUNNING))

/** Whether any update so far ended a task (KILLED, FAILED, LOST, ...). */
const terminalUpdates = (framework: Framework.TestFramework) =>
  framework.updates.filter((u) => TaskStates.isTerminal(u.state)).map((u) => `${u.taskId} ${TaskStates.name(u.state)}`)

/** Whether `expected` occurs in `texts` in this order (other lines may come between). */
export const inOrder = (texts: ReadonlyArray<string>, expected: ReadonlyArray<string | RegExp>) => {
  let at = 0
  for (const want of expected) {
    while (at < texts.length && !(typeof want === "string" ? texts[at] === want : want.test(texts[at]!))) at++
    if (at === texts.length) return false
    at++
  }
  return true
}

const small = "cpus:1;mem:256;disk:256"

/** Tasks launched on every agent run and finish; the master and the framework agree. */
export const launchAndFinish: Scenario = {
  name: "launch and finish tasks: one on each agent runs, exits 0 and is FINISHED",
  options: { agents: 2, agentResources: small },
  timeoutMs: 90_000,
  run: (cluster) =>
    Effect.gen(function*() {
      const framework = yield* Framework.open(cluster.master, "finisher")
      const taskIds = yield* launchOnEach(framework, cluster.agents.map((a) => a.agentId), "echo hello; sleep 1; exit 0")
      expect(taskIds).toEqual(["t1", "t2"])
      yield* within("both tasks to end", 30_000, framework.awaitTerminal(taskIds))
      for (const id of taskIds) {
        expect(framework.updates.filter((u) => u.taskId === id).map((u) => TaskStates.name(u.state))).toContain("RUNNING")
        const last = framework.updates.filter((u) => u.taskId === id).at(-1)!
        expect(last.state).toBe(TaskState.FINISHED)
      }
      const state = yield* cluster.waitFor(
        "both tasks FINISHED at the master",
        (s) => taskIds.every((id) => s.tasks.some((t) => t.info?.taskId === id && t.state === TaskState.FINISHED))
      )
      // Each on the agent it was offered from.
      expect(state.tasks.map((t) => [t.info?.taskId, t.agentId]).sort()).toEqual(
        taskIds.map((id, i) => [id, cluster.agents[i]!.agentId])
      )
      yield* cluster.events.waitFor("t2 FINISHED in the event log", (e) => /^task t2 FINISHED/.test(e.text), { timeout: 10_000 })
    })
}

/** An agent SIGKILLed and restarted re-registers under its id with its task still RUNNING. */
export const agentKilledAndRestarted: Scenario = {
  name: "agent killed and restarted: it re-registers under its id and its task runs on",
  options: { agents: 2, agentResources: small },
  timeoutMs: 120_000,
  run: (cluster) =>
    Effect.gen(function*() {
      const framework = yield* Framework.open(cluster.master, "keeper", { failoverTimeoutSeconds: 600 })
      const taskIds = yield* launchOnEach(framework, cluster.agents.map((a) => a.agentId), "exec sleep 300")
      for (const id of taskIds) yield* within(`${id} RUNNING`, 30_000, framework.awaitState(id, TaskState.RUNNING))
      const agent = cluster.agents[0]!

      yield* agent.kill
      yield* cluster.events.waitFor("the kill in the log", (e) => e.text === `${agent.name} SIGKILL`, { timeout: 1000 })
      yield* agent.restart
      const state = yield* cluster.waitFor(
        "the agent back, active, with its task",
        (s) =>
          s.agents.length === 2 && s.agents.every((a) => a.state === v1.Agent_State.ACTIVE) && running(s, taskIds),
        { timeout: 30_000 }
      )
      expect(state.agents.map((a) => a.info?.agentId).sort()).toEqual(cluster.agents.map((a) => a.agentId).sort())
      expect(state.tasks.find((t) => t.info?.taskId === "t1")?.agentId).toBe(agent.agentId)
      // Re-attached, not lost and launched again.
      expect(terminalUpdates(framework)).toEqual([])
      expect(inOrder(cluster.events.texts(), [`${agent.name} SIGKILL`, `${agent.name} restarted`]), cluster.events.format()).toBe(true)
    })
}

/** With three masters on etcd, the leader is killed: another leads with the agents and the tasks. */
export const leaderKilled: Scenario = {
  name: "leader master killed with three masters on etcd: a new leader has the agent, the framework and the task",
  options: { masters: 3, storage: "etcd", agents: 1, agentResources: small, master: { leaderLeaseSeconds: 2 } },
  timeoutMs: 150_000,
  run: (cluster) =>
    Effect.gen(function*() {
      expect(cluster.masters).toHaveLength(3)
      const first = yield* within("a leader", 20_000, Effect.gen(function*() {
        while (true) {
          const leader = yield* cluster.leader
          if (leader !== undefined) return leader
          yield* Effect.sleep("100 millis")
        }
      }))
      // The framework is given every master; it follows whichever leads.
      const framework = yield* Framework.open(cluster.masters.map((m) => m.endpoint).join(","), "ha", { failoverTimeoutSeconds: 600 })
      const [taskId] = yield* launchOnEach(framework, [cluster.agents[0]!.agentId], "exec sleep 300")
      yield* within(`${taskId} RUNNING`, 30_000, framework.awaitState(taskId!, TaskState.RUNNING))

      yield* first.kill
      const next = yield* within("a new leader", 45_000, Effect.gen(function*() {
        while (true) {
          const leader = yield* cluster.leader
          if (leader !== undefined && leader.name !== first.name) return leader
          yield* Effect.sleep("200 millis")
        }
      }))
      expect(next.name).not.toBe(first.name)
      const state = yield* cluster.waitFor(
        "the agent, the framework and the task at the new leader",
        (s) => s.agents.length === 1 && s.frameworks.some((f) => f.connected) && running(s, [taskId!]),
        { timeout: 45_000 }
      )
      expect(state.master?.endpoint).toBe(next.endpoint)
      expect(state.frameworks.map((f) => f.info?.frameworkId)).toEqual([framework.frameworkId])
      expect(terminalUpdates(framework)).toEqual([])

      // The old leader comes back as a standby.
      yield* first.restart
      expect((yield* cluster.leader)?.name).toBe(next.name)
      expect(inOrder(cluster.events.texts(), [`${first.name} SIGKILL`, `${first.name} restarted`]), cluster.events.format()).toBe(true)
    })
}

/** A partitioned agent turns UNREACHABLE with its task; healed, both come back and nothing was killed. */
export const partitionHealed: Scenario = {
  name: "partition: the agent and its task turn UNREACHABLE, and RUNNING again once healed",
  // Unreachable after 4 missed pings of 500 ms.
  options: { agents: 1, agentResources: small, master: { agentPingSeconds: 0.5, agentPingMisses: 4 } },
  timeoutMs: 120_000,
  run: (cluster) =>
    Effect.gen(function*() {
      const framework = yield* Framework.open(cluster.master, "patient", { failoverTimeoutSeconds: 600 })
      const agent = cluster.agents[0]!
      const [taskId] = yield* launchOnEach(framework, [agent.agentId], "exec sleep 300")
      yield* within(`${taskId} RUNNING`, 30_000, framework.awaitState(taskId!, TaskState.RUNNING))
      const before = framework.updates.length

      yield* agent.partition
      const unreachable = yield* within("UNREACHABLE", 30_000, framework.awaitState(taskId!, TaskState.UNREACHABLE))
      expect(unreachable.reason).toBe(v1.TaskStatus_Reason.AGENT_DISCONNECTED)
      const cut = yield* cluster.waitFor("the agent unreachable", (s) => s.agents[0]?.state === v1.Agent_State.UNREACHABLE)
      expect(cut.tasks.map((t) => t.state)).toEqual([TaskState.UNREACHABLE])

      yield* agent.heal
      yield* within(
        "RUNNING again",
        45_000,
        Effect.gen(function*() {
          while (!framework.updates.slice(before).some((u) => u.taskId === taskId && u.state === TaskState.RUNNING)) {
            yield* Effect.sleep("50 millis")
          }
        })
      )
      const healed = yield* cluster.waitFor(
        "the agent active with its task",
        (s) => s.agents[0]?.state === v1.Agent_State.ACTIVE && running(s, [taskId!]),
        { timeout: 30_000 }
      )
      expect(healed.agents.map((a) => a.info?.agentId)).toEqual([agent.agentId])
      expect(terminalUpdates(framework)).toEqual([])
      expect(
        inOrder(cluster.events.texts(), [`task ${taskId} RUNNING on ${agent.name}`, `task ${taskId} UNREACHABLE (AGENT_DISCONNECTED) on ${agent.name}`, new RegExp(`^task ${taskId} RUNNING`)]),
        cluster.events.format()
      ).toBe(true)
    })
}

/** Every scenario, in the order of issue 7's "Demonstrated by". */
export const all: ReadonlyArray<Scenario> = [launchAndFinish, agentKilledAndRestarted, leaderKilled, partitionHealed]
