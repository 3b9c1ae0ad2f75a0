// A complete Berth framework: launch N `echo` tasks across the cluster, wait for all of them to
// finish, print what each one wrote to its stdout, exit 0 (1 if a task failed).
import { NodeRuntime } from "@effect/platform-node"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { Sandbox, SchedulerSession } from "@berth/sdk-scheduler"
import { Effect, Stream } from "effect"
import { parseArgs } from "node:util"

const { values } = parseArgs({ options: { master: { type: "string", default: "127.0.0.1:5050" }, tasks: { type: "string", default: "6" } } })
const master = values.master
const count = Number(values.tasks)
const need = [Resources.scalar("cpus", 0.1), Resources.scalar("mem", 32)]

const program = Effect.gen(function*() {
  const session = yield* SchedulerSession.SchedulerSession
  const waiting = Array.from({ length: count }, (_, i) => i)
  const done = new Map<string, v1.TaskStatus>()

  const onOffer = (offer: v1.Offer) => {
    const tasks: Array<v1.TaskInfo> = []
    let left = offer.resources
    while (waiting.length > 0 && Resources.contains(left, need)) {
      const i = waiting.shift()!
      left = Resources.subtract(left, need)
      tasks.push(v1.TaskInfo.create({
        name: `hello-${i}`, taskId: `hello-${i}`, resources: need,
        command: { shell: true, value: `echo "Hello from task ${i} on $(hostname)"` }
      }))
    }
    return tasks.length === 0
      ? session.decline([offer.offerId], { refuseSeconds: 30 })
      : session.accept([offer.offerId], [{ operationId: "", kind: { $case: "launch", value: { taskInfos: tasks } } }])
  }

  const onStatus = (status: v1.TaskStatus) => Effect.gen(function*() {
    if (TaskStates.isTerminal(status.state)) done.set(status.taskId, status)
    yield* session.acknowledge(status)
  })

  yield* session.events.pipe(
    Stream.mapEffect((event) =>
      event.$case === "offers" ? Effect.forEach(event.value.offers, onOffer)
      : event.$case === "update" ? Effect.forEach(event.value.statuses, onStatus)
      : Effect.void),
    Stream.takeUntil(() => done.size === count),
    Stream.runDrain
  )

  const frameworkId = yield* session.frameworkId
  let failed = 0
  for (const status of [...done.values()].sort((a, b) => a.taskId.localeCompare(b.taskId, "en", { numeric: true }))) {
    const out = yield* Sandbox.readFile({ master, agentId: status.agentId, frameworkId, executorId: status.taskId })
    console.log(`${status.taskId} ${TaskStates.name(status.state)}: ${new TextDecoder().decode(out).trim()}`)
    if (status.state !== v1.TaskState.FINISHED) failed++
  }
  yield* session.teardown.pipe(Effect.ignore)
  if (failed > 0) return yield* Effect.fail(new Error(`${failed} of ${count} tasks did not finish`))
})

program.pipe(Effect.provide(SchedulerSession.layer({ master, framework: { name: "hello-framework" } })), NodeRuntime.runMain)
