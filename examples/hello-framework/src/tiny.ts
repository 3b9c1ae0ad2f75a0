import { NodeRuntime } from "@effect/platform-node"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { SchedulerSession } from "@berth/sdk-scheduler"
import { Effect, Stream } from "effect"

const tasks = [0, 1, 2].map((i) => v1.TaskInfo.create({
  taskId: `tiny-${i}`, resources: [Resources.scalar("cpus", 0.1)], command: { shell: true, value: `echo ${i}` } }))

const program = Effect.gen(function*() {
  const session = yield* SchedulerSession.SchedulerSession
  let launched = false, finished = 0
  yield* session.events.pipe(Stream.mapEffect((event) =>
    event.$case === "offers" ? Effect.forEach(event.value.offers, (offer) => launched
      ? session.decline([offer.offerId])
      : session.accept([offer.offerId], [{ operationId: "", kind: { $case: "launch", value: { taskInfos: tasks } } }])
        .pipe(Effect.tap(Effect.sync(() => (launched = true)))))
    : event.$case === "update" ? Effect.forEach(event.value.statuses, (status) => {
      if (TaskStates.isTerminal(status.state)) console.log(status.taskId, TaskStates.name(status.state), ++finished)
      return session.acknowledge(status)
    }) : Effect.void), Stream.takeUntil(() => finished === tasks.length), Stream.runDrain)
})

program.pipe(Effect.provide(SchedulerSession.layer({ master: process.argv[2] ?? "127.0.0.1:5050", framework: { name: "tiny" } })),
  NodeRuntime.runMain)
