/**
 * The executor's side of the executor API: the events its agent sends (launch, kill, shutdown,
 * ...) and the calls it makes back (status updates, messages to the scheduler). The same service
 * serves the agent's built-in executors in process and, over gRPC, custom executor programs.
 *
 * @since 0.1.0
 */
import type { Cause } from "effect"
import { Clock, Context, Effect, Layer, Queue, Stream } from "effect"
import type { v1 } from "@berth/proto"
import { EnvironmentError } from "./ExecutorError.ts"
import * as grpcTransport from "./internal/grpcTransport.ts"
import { makeStatus } from "./internal/status.ts"

/**
 * One event from the agent: `{ $case: "launch", value: { task } }`, `{ $case: "kill", ... }`, ...
 *
 * @since 0.1.0
 * @category models
 */
export type ExecutorEvent = NonNullable<v1.ExecutorServiceSubscribeResponse["event"]>

/**
 * What an executor says about a task; the session fills in the rest of the `v1.TaskStatus`
 * (uuid, timestamp, source, executor and agent ids).
 *
 * @since 0.1.0
 * @category models
 */
export interface StatusInit {
  readonly taskId: string
  readonly state: v1.TaskState
  readonly message?: string
  readonly reason?: v1.TaskStatus_Reason
  /** The result of the task's health check; set on updates once the task has one. */
  readonly healthy?: boolean
  /** The result of the task's readiness check (`TaskInfo.check`); set once the task has one. */
  readonly ready?: boolean
  readonly exitCode?: number
  readonly data?: Uint8Array
}

/**
 * The session of one executor with its agent.
 *
 * `events` has a single consumer: the executor's main loop. `update` stamps every status with a
 * fresh uuid (the agent resends each until the scheduler acknowledges that uuid) and returns what
 * was sent.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { v1 } from "@berth/proto"
 * import { ExecutorSession } from "@berth/sdk-executor"
 *
 * const program = Effect.gen(function*() {
 *   const session = yield* ExecutorSession.ExecutorSession
 *   yield* session.update({ taskId: "t1", state: v1.TaskState.RUNNING })
 * })
 * ```
 *
 * @since 0.1.0
 * @category services
 */
export class ExecutorSession extends Context.Service<ExecutorSession, {
  readonly frameworkId: string
  readonly executorId: string
  readonly agentId: string
  /** The agent's events, in order; ends when the agent ends the session. */
  readonly events: Stream.Stream<ExecutorEvent>
  /** Builds the full status for `status`, hands it to the agent and returns it. */
  readonly update: (status: StatusInit) => Effect.Effect<v1.TaskStatus>
  /** Sends bytes to the scheduler. */
  readonly message: (data: Uint8Array) => Effect.Effect<void>
}>()("@berth/sdk-executor/ExecutorSession") {}

/**
 * What a session runs over. Transports (in process, gRPC) supply the events and deliver the
 * calls; `make` adds what every session does the same way.
 *
 * @since 0.1.0
 * @category models
 */
export interface Transport {
  readonly frameworkId: string
  readonly executorId: string
  readonly agentId: string
  readonly events: Stream.Stream<ExecutorEvent>
  readonly onUpdate: (status: v1.TaskStatus) => Effect.Effect<void>
  readonly onMessage?: ((data: Uint8Array) => Effect.Effect<void>) | undefined
}

/**
 * A session over `transport`.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { ExecutorSession } from "@berth/sdk-executor"
 *
 * const session = ExecutorSession.make({
 *   frameworkId: "f1", executorId: "e1", agentId: "a1",
 *   events: Stream.empty,
 *   onUpdate: (status) => Effect.log(status)
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (transport: Transport): ExecutorSession["Service"] => {
  const origin = { executorId: transport.executorId, agentId: transport.agentId }
  const onMessage = transport.onMessage
  return ExecutorSession.of({
    frameworkId: transport.frameworkId,
    executorId: transport.executorId,
    agentId: transport.agentId,
    events: transport.events,
    update: Effect.fn("ExecutorSession.update")(function*(init: StatusInit) {
      const status = makeStatus(init, origin, yield* Clock.currentTimeMillis)
      yield* transport.onUpdate(status)
      return status
    }),
    message: (data) => onMessage === undefined ? Effect.void : onMessage(data)
  })
}

/**
 * An in-process session and the agent's handles on it: `send` delivers an event to the
 * executor, `end` ends its event stream (after the events already sent).
 *
 * @since 0.1.0
 * @category models
 */
export interface InProcess {
  readonly session: ExecutorSession["Service"]
  readonly send: (event: ExecutorEvent) => Effect.Effect<void>
  readonly end: Effect.Effect<void>
}

/**
 * A session for an executor that runs as a fiber inside the agent, such as the built-in command
 * executor, so a task costs no extra process. Events are buffered without bound because the
 * agent must never block on a slow executor; an executor sees only its own few events.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ExecutorSession } from "@berth/sdk-executor"
 *
 * const program = Effect.gen(function*() {
 *   const inProcess = yield* ExecutorSession.makeInProcess({
 *     frameworkId: "f1", executorId: "e1", agentId: "a1",
 *     onUpdate: (status) => Effect.log("checkpoint and forward", status.taskId)
 *   })
 *   yield* inProcess.send({ $case: "shutdown", value: { gracePeriodSeconds: 3 } })
 *   yield* inProcess.end
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeInProcess = (options: {
  readonly frameworkId: string
  readonly executorId: string
  readonly agentId: string
  readonly onUpdate: (status: v1.TaskStatus) => Effect.Effect<void>
  readonly onMessage?: ((data: Uint8Array) => Effect.Effect<void>) | undefined
}): Effect.Effect<InProcess> =>
  Effect.map(Queue.unbounded<ExecutorEvent, Cause.Done>(), (queue) => ({
    session: make({ ...options, events: Stream.fromQueue(queue) }),
    send: (event) => Effect.asVoid(Queue.offer(queue, event)),
    end: Effect.asVoid(Queue.end(queue))
  }))

/**
 * The in-process session as a layer, to provide to the executor program.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CommandExecutor, ExecutorSession } from "@berth/sdk-executor"
 *
 * declare const inProcess: ExecutorSession.InProcess
 * const executor = CommandExecutor.run({ sandbox: "/var/lib/berth/sandbox/t1" }).pipe(
 *   Effect.provide(ExecutorSession.layerInProcess(inProcess))
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerInProcess = (inProcess: InProcess): Layer.Layer<ExecutorSession> =>
  Layer.succeed(ExecutorSession, inProcess.session)

/**
 * The environment variables the agent sets for a custom executor program: framework id,
 * executor id, agent id, the agent's executor API endpoint ("host:port"), the sandbox path, how
 * long to keep re-subscribing after losing the agent (milliseconds; 15 minutes by default, like
 * Mesos' `MESOS_RECOVERY_TIMEOUT`), the longest wait between two attempts, and the CA file when
 * the agent serves TLS.
 *
 * @example
 * ```ts
 * import { ExecutorSession } from "@berth/sdk-executor"
 *
 * const sandbox = process.env[ExecutorSession.Env.sandbox] ?? process.cwd()
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export const Env = grpcTransport.Env

/**
 * The session of a custom executor program with the agent that launched it, over the agent's
 * gRPC `ExecutorService`, configured from the environment the agent sets (see {@link Env}).
 *
 * It subscribes at once, and again after the stream breaks (the agent restarted): with backoff
 * (50 ms doubling up to `BERTH_SUBSCRIPTION_BACKOFF_MAX_MS`, 2 s by default) until
 * `BERTH_RECOVERY_TIMEOUT_MS`, each time listing the tasks it was given but has not reported on
 * and the updates the agent has not acknowledged; the agent takes each update once (by uuid), so
 * resending is safe. `events` ends when the agent ends the session (after SHUTDOWN), refuses the
 * subscription, or stays away past the recovery timeout: the program should then exit.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { NodeRuntime } from "@effect/platform-node"
 * import { v1 } from "@berth/proto"
 * import { ExecutorSession } from "@berth/sdk-executor"
 *
 * const program = Effect.gen(function*() {
 *   const session = yield* ExecutorSession.ExecutorSession
 *   yield* session.events.pipe(
 *     Stream.runForEach((event) =>
 *       event.$case === "launch"
 *         ? session.update({ taskId: event.value.task!.taskId, state: v1.TaskState.RUNNING })
 *         : Effect.void
 *     )
 *   )
 * })
 * NodeRuntime.runMain(program.pipe(Effect.provide(ExecutorSession.layerGrpc())))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerGrpc = (
  env: Record<string, string | undefined> = process.env
): Layer.Layer<ExecutorSession, EnvironmentError> =>
  Layer.effect(
    ExecutorSession,
    Effect.gen(function*() {
      const options = grpcTransport.optionsFromEnv(env)
      if (typeof options === "string") return yield* new EnvironmentError({ message: options })
      return make(yield* grpcTransport.make(options))
    })
  )
