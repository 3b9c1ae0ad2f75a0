/**
 * An agent restart (with recovery) that catches a task between STARTING and the start of its
 * command must not fail the task: nothing of it ran, so the restarted agent can still run it.
 *
 * Before the fix, the re-attached command executor reported FAILED, REASON_EXECUTOR_TERMINATED,
 * "The executor stopped before the task's command was started; it never ran". This is what made a seeded simulation's
 * `sleep` job end FAILED instead of FINISHED when its "restart agent" step landed in the few
 * milliseconds between a launch reaching the agent and the command's spawn. Here the window is
 * held open on purpose: the task fetches an artifact from a local server that does not answer
 * until the agent has restarted.
 *
 * Mesos never reports TASK_FAILED for this: its executor outlives an agent restart and goes on to
 * start the task it was given, and a task the executor never received is TASK_DROPPED (TASK_LOST
 * for frameworks that are not partition-aware) with REASON_AGENT_RESTARTED; FAILED means the
 * task itself failed. Berth's invariant 5 (ARCHITECTURE §3): an agent restart kills no healthy task.
 */
import { describe, expect, it } from "@effect/vitest"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as Framework from "../../../test/support/framework.ts"

const { TaskState } = v1
const reasonName = (reason: v1.TaskStatus_Reason) => Object.entries(v1.TaskStatus_Reason).find(([, value]) => value === reason)?.[0] ?? String(reason)
const sourceName = (source: v1.TaskStatus_Source) => Object.entries(v1.TaskStatus_Source).find(([, value]) => value === source)?.[0] ?? String(source)

const within = <A, E, R>(what: string, ms: number, effect: Effect.Effect<A, E, R>) =>
  effect.pipe(Effect.timeoutOrElse({ duration: ms, orElse: () => Effect.die(new Error(`timed out after ${ms} ms: ${what}`)) }))

/** A loopback HTTP server that holds every request until `release`, then answers them all. */
const heldServer = Effect.acquireRelease(
  Effect.callback<{ readonly url: string; readonly requests: () => number; readonly release: () => void; readonly server: http.Server }>((resume) => {
    let held = true
    let requests = 0
    const waiting: Array<http.ServerResponse> = []
    const answer = (res: http.ServerResponse) => {
      if (!res.destroyed) res.end("artifact\n")
    }
    const server = http.createServer((_req, res) => {
      requests++
      if (held) waiting.push(res)
      else answer(res)
    })
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as AddressInfo).port
      resume(Effect.succeed({
        url: `http://127.0.0.1:${port}/artifact.txt`,
        requests: () => requests,
        release: () => {
          held = false
          for (const res of waiting.splice(0)) answer(res)
        },
        server
      }))
    })
  }),
  ({ server }) =>
    Effect.callback<void>((resume) => {
      server.closeAllConnections()
      server.close(() => resume(Effect.void))
    })
)

describe("agent restart in the middle of a launch", () => {
  it.live("a task caught between STARTING and its command's start by an agent restart still runs and FINISHES", () =>
    Effect.gen(function*() {
      const artifact = yield* heldServer
      const cluster = yield* TestCluster.make({ agents: 1, statusUpdateRetrySeconds: 0.2 })
      const framework = yield* Framework.open(cluster.master, "restart-mid-launch", { failoverTimeoutSeconds: 3600 })
      const agent = cluster.agents[0]!
      const offer = yield* within("an offer", 20_000, framework.nextOffer)
      yield* framework.session.accept([offer.offerId], [Framework.launch([
        v1.TaskInfo.create({
          taskId: "mid-launch",
          name: "mid-launch",
          resources: [Resources.scalar("cpus", 0.1), Resources.scalar("mem", 16)],
          command: { shell: true, value: "cat artifact.txt && sleep 0.2", uris: [{ value: artifact.url }] }
        })
      ])])
      // The executor has the task (STARTING) and is fetching its artifact: its command has not started.
      yield* within("STARTING", 20_000, framework.awaitState("mid-launch", TaskState.STARTING))
      yield* within("the artifact requested", 20_000, Effect.gen(function*() {
        while (artifact.requests() === 0) yield* Effect.sleep("10 millis")
      }))

      // The agent crashes and comes back on the same work dir (recovery); then the artifact comes.
      yield* agent.restart
      artifact.release()

      yield* within("a terminal update", 30_000, framework.awaitTerminal(["mid-launch"]))
      const updates = framework.updates.filter((u) => u.taskId === "mid-launch")
      const terminal = updates.find((u) => TaskStates.isTerminal(u.state))!
      const described = updates.map((u) => `${TaskStates.name(u.state)} reason=${reasonName(u.reason)} source=${sourceName(u.source)} "${u.message}"`).join("\n")
      expect(updates.some((u) => u.state === TaskState.FAILED), described).toBe(false)
      expect(TaskStates.name(terminal.state), described).toBe("FINISHED")
      expect(terminal.exitCode, described).toBe(0)
      // It really ran after the restart: the artifact was fetched again and the command read it.
      expect(artifact.requests()).toBeGreaterThanOrEqual(2)
    }), 90_000)
})
