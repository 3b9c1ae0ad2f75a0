/**
 * The simulation reports how each task ended, not only that it ended: the state, reason, source,
 * message and exit code of the master's latest status, and the states the master reported on the
 * way. The hash keeps recording only whether each task ended. A job that fails on purpose (exit 3)
 * beside one that finishes shows both, so a run where a fault ends a task otherwise than expected
 * can be explained from the report alone.
 */
import { describe, expect, it } from "@effect/vitest"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { SchedulerSession } from "@berth/sdk-scheduler"
import { Simulation } from "@berth/testkit"
import { Context, Effect, Layer, Stream } from "effect"

const JOBS = [
  { taskId: "fails", command: "sleep 0.2; exit 3" },
  { taskId: "works", command: "sleep 0.2" }
]

/** Launches both jobs from its first offer; persists every update before acknowledging it. */
const twoJobs: Simulation.Framework = {
  name: "two-jobs",
  run: (ctx) =>
    Effect.gen(function*() {
      const known = ctx.store.get("frameworkId")
      const context = yield* Layer.build(SchedulerSession.layer({
        master: ctx.master,
        framework: { name: "two-jobs", failoverTimeoutSeconds: 3600, ...(known === undefined ? {} : { frameworkId: known }) }
      }))
      const session = Context.get(context, SchedulerSession.SchedulerSession)
      yield* ctx.store.put("frameworkId", yield* session.frameworkId)
      yield* session.events.pipe(
        Stream.runForEach((event) =>
          Effect.gen(function*() {
            if (event.$case === "offers") {
              for (const offer of event.value.offers) {
                const todo = JOBS.filter((j) => ctx.store.task(j.taskId) === undefined)
                if (todo.length === 0) {
                  yield* session.decline([offer.offerId], { refuseSeconds: 1 })
                  continue
                }
                for (const job of todo) yield* ctx.store.putTask(job.taskId, v1.TaskState.STAGING)
                yield* session.accept([offer.offerId], [{
                  operationId: "",
                  kind: {
                    $case: "launch",
                    value: {
                      taskInfos: todo.map((job) =>
                        v1.TaskInfo.create({
                          taskId: job.taskId,
                          name: job.taskId,
                          resources: [Resources.scalar("cpus", 0.1), Resources.scalar("mem", 16)],
                          command: { shell: true, value: job.command }
                        })
                      )
                    }
                  }
                }])
              }
            }
            if (event.$case === "update") {
              for (const status of event.value.statuses) {
                const recorded = ctx.store.task(status.taskId)
                if (recorded === undefined || !TaskStates.isTerminal(recorded)) yield* ctx.store.putTask(status.taskId, status.state)
                yield* session.acknowledge(status)
              }
            }
          })
        )
      )
    }).pipe(Effect.asVoid)
}

describe("Simulation.simulate, task outcomes", () => {
  it.live("the report says how each task ended (state, reason, source, message, exit code, history); the hash only that it ended", () =>
    Effect.gen(function*() {
      const report = yield* Effect.scoped(Simulation.simulate({ seed: 11, steps: 2, faults: ["duplicate-updates"], framework: twoJobs, cluster: { agents: 1 } }))
      const explain = `${report.tasks.map(Simulation.formatTask).join("\n")}\n${report.clusterLog}`
      expect(report.violations, explain).toEqual([])
      expect(report.outcome, explain).toEqual(["fails FAILED", "works FINISHED"])
      const [fails, works] = report.tasks
      expect(fails, explain).toMatchObject({
        taskId: "fails",
        agent: "agent-1",
        state: "FAILED",
        reason: "COMMAND_EXECUTOR_FAILED",
        source: "EXECUTOR",
        message: "Command exited with status 3",
        exitCode: 3
      })
      expect(fails!.history.at(-1), explain).toBe("FAILED(COMMAND_EXECUTOR_FAILED)")
      expect(fails!.history, explain).toContain("RUNNING")
      expect(works, explain).toMatchObject({ taskId: "works", state: "FINISHED", reason: "", message: "Command exited with status 0", exitCode: 0 })
      expect(works!.history.at(-1), explain).toBe("FINISHED")
      expect(Simulation.formatTask(fails!)).toMatch(/^fails FAILED \(COMMAND_EXECUTOR_FAILED, from EXECUTOR, on agent-1\) exit 3: Command exited with status 3 \[.*FAILED\(COMMAND_EXECUTOR_FAILED\)\]$/)
      // Hashed: that both ended, not how.
      expect(report.events.filter((e) => e.startsWith("outcome: "))).toEqual(["outcome: fails ended", "outcome: works ended"])
    }), 120_000)
})
