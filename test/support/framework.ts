/**
 * A scripted framework for integration tests: it subscribes through the real SchedulerSession,
 * acknowledges every update it receives (after recording it), and exposes offers and updates
 * to the test.
 */
import { TaskStates, v1 } from "@berth/proto"
import { SchedulerSession } from "@berth/sdk-scheduler"
import { Operator } from "@berth/testkit"
import { Context, Deferred, Effect, Layer, Queue, Scope, Stream } from "effect"

export interface TestFramework {
  readonly session: SchedulerSession.Service
  readonly frameworkId: string
  /** The next offer (offers are queued as they arrive). */
  readonly nextOffer: Effect.Effect<v1.Offer>
  /** Every status update received, in arrival order. */
  readonly updates: ReadonlyArray<v1.TaskStatus>
  /** Every operation status received, in arrival order. */
  readonly operations: ReadonlyArray<v1.OperationStatus>
  /** Hex uuids of every update that carried one, and of every acknowledgement sent. */
  readonly received: ReadonlySet<string>
  readonly acknowledged: ReadonlySet<string>
  /** Messages from the framework's custom executors, and executor failures, in arrival order. */
  readonly messages: ReadonlyArray<v1.SubscribeResponse_Message>
  readonly failures: ReadonlyArray<v1.SubscribeResponse_Failure>
  /** Waits until `taskId` reports `state` and returns that update. */
  readonly awaitState: (taskId: string, state: v1.TaskState) => Effect.Effect<v1.TaskStatus>
  /** Waits until every task in `taskIds` reached a terminal state. */
  readonly awaitTerminal: (taskIds: ReadonlyArray<string>) => Effect.Effect<void>
}

export const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")

export const open = (
  master: string,
  name = "test-framework",
  framework: { readonly failoverTimeoutSeconds?: number; readonly frameworkId?: string; readonly roles?: ReadonlyArray<string> } = {},
  /** More session options: credentials and TLS for a secured cluster. */
  connection: Pick<SchedulerSession.Options, "credentials" | "tls"> = {}
): Effect.Effect<TestFramework, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const context = yield* Layer.build(SchedulerSession.layer({ master, framework: { name, ...framework }, ...connection }))
    const session = Context.get(context, SchedulerSession.SchedulerSession)
    const offers = yield* Queue.unbounded<v1.Offer>()
    const rescinded = new Set<string>()
    /** The next offer still valid: rescinded ones are skipped. */
    const nextOffer: Effect.Effect<v1.Offer> = Effect.flatMap(Queue.take(offers), (offer) =>
      rescinded.has(offer.offerId) ? nextOffer : Effect.succeed(offer))
    const updates: Array<v1.TaskStatus> = []
    const operations: Array<v1.OperationStatus> = []
    const messages: Array<v1.SubscribeResponse_Message> = []
    const failures: Array<v1.SubscribeResponse_Failure> = []
    const received = new Set<string>()
    const acknowledged = new Set<string>()
    const waiters: Array<{ match: (s: v1.TaskStatus) => boolean; done: Deferred.Deferred<v1.TaskStatus> }> = []
    yield* session.events.pipe(
      Stream.runForEach((event) =>
        Effect.gen(function*() {
          if (event.$case === "offers") {
            for (const offer of event.value.offers) Queue.offerUnsafe(offers, offer)
          }
          if (event.$case === "rescind") for (const id of event.value.offerIds) rescinded.add(id)
          // Offers from before a re-subscription are void.
          if (event.$case === "subscribed") for (const offer of yield* Queue.clear(offers)) rescinded.add(offer.offerId)
          if (event.$case === "updateOperationStatus") operations.push(...event.value.statuses)
          if (event.$case === "message") messages.push(event.value)
          if (event.$case === "failure") failures.push(event.value)
          if (event.$case === "update") {
            for (const status of event.value.statuses) {
              updates.push(status)
              if (status.uuid.length > 0) received.add(hex(status.uuid))
              yield* session.acknowledge(status)
              if (status.uuid.length > 0) acknowledged.add(hex(status.uuid))
              for (const waiter of waiters) if (waiter.match(status)) Deferred.doneUnsafe(waiter.done, Effect.succeed(status))
            }
          }
        })
      ),
      Effect.forkScoped
    )
    const frameworkId = yield* session.frameworkId
    const awaitState = (taskId: string, state: v1.TaskState) =>
      Effect.gen(function*() {
        // Register first, then look back: an update arriving in between is caught either way.
        const done = yield* Deferred.make<v1.TaskStatus>()
        waiters.push({ match: (s) => s.taskId === taskId && s.state === state, done })
        const seen = updates.find((s) => s.taskId === taskId && s.state === state)
        return seen ?? (yield* Deferred.await(done))
      })
    const awaitTerminal = (taskIds: ReadonlyArray<string>) =>
      Effect.forEach(
        taskIds,
        (taskId) =>
          Effect.gen(function*() {
            const done = yield* Deferred.make<v1.TaskStatus>()
            waiters.push({ match: (s) => s.taskId === taskId && TaskStates.isTerminal(s.state), done })
            if (updates.some((s) => s.taskId === taskId && TaskStates.isTerminal(s.state))) return
            yield* Deferred.await(done)
          }),
        { discard: true }
      )
    return {
      session,
      frameworkId,
      nextOffer,
      updates,
      operations,
      messages,
      failures,
      received,
      acknowledged,
      awaitState,
      awaitTerminal
    }
  })

/** A LAUNCH operation for shell-command tasks. */
export const launch = (tasks: ReadonlyArray<v1.TaskInfo>): v1.Operation => ({
  operationId: "",
  kind: { $case: "launch", value: { taskInfos: [...tasks] } }
})

/** The master's state through its operator API (one call, channel closed after). */
export const operatorState = (master: string) => Effect.scoped(Effect.flatMap(Operator.make(master), (o) => o.state))
