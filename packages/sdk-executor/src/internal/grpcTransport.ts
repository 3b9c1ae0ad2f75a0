import * as grpc from "@grpc/grpc-js"
import { TaskStates, v1 } from "@berth/proto"
import { Cause, Clock, Effect, Queue, Schedule, Scope, Stream } from "effect"
import * as fs from "node:fs"
import type { ExecutorEvent, Transport } from "../ExecutorSession.ts"

/** The environment the agent gives a custom executor program (see ExecutorSession.Env). */
export const Env = {
  frameworkId: "BERTH_FRAMEWORK_ID",
  executorId: "BERTH_EXECUTOR_ID",
  agentId: "BERTH_AGENT_ID",
  agentEndpoint: "BERTH_AGENT_ENDPOINT",
  sandbox: "BERTH_SANDBOX",
  recoveryTimeoutMs: "BERTH_RECOVERY_TIMEOUT_MS",
  subscriptionBackoffMaxMs: "BERTH_SUBSCRIPTION_BACKOFF_MAX_MS",
  /** PEM file of the CA that signed the agent's certificate, when the agent serves TLS. */
  agentCaFile: "BERTH_AGENT_CA_FILE",
  /** The secret this executor authenticates its calls to the agent with. */
  token: "BERTH_EXECUTOR_TOKEN"
} as const

export interface GrpcOptions {
  readonly frameworkId: string
  readonly executorId: string
  readonly agentId: string
  readonly endpoint: string
  /** How long the executor keeps trying to re-subscribe after losing its agent. */
  readonly recoveryTimeoutMs: number
  /** The longest wait between two subscription attempts. */
  readonly backoffMaxMs: number
  readonly credentials: grpc.ChannelCredentials
  /** Sent as `authorization: Bearer <token>` with every call, when the agent gave one. */
  readonly token: string | undefined
}

/** Reads the options from the environment the agent set; names the first variable missing or wrong. */
export const optionsFromEnv = (env: Record<string, string | undefined>): GrpcOptions | string => {
  const required = (name: string): string | undefined => {
    const value = env[name]
    return value === undefined || value === "" ? undefined : value
  }
  for (const name of [Env.frameworkId, Env.executorId, Env.agentEndpoint]) {
    if (required(name) === undefined) return `${name}: must be set (the agent sets it when it launches a custom executor)`
  }
  const number = (name: string, fallback: number): number | string => {
    const value = env[name]
    if (value === undefined || value === "") return fallback
    const n = Number(value)
    return Number.isFinite(n) && n >= 0 ? n : `${name}: must be a number of milliseconds >= 0 (got "${value}")`
  }
  const recoveryTimeoutMs = number(Env.recoveryTimeoutMs, 15 * 60_000)
  if (typeof recoveryTimeoutMs === "string") return recoveryTimeoutMs
  const backoffMaxMs = number(Env.subscriptionBackoffMaxMs, 2_000)
  if (typeof backoffMaxMs === "string") return backoffMaxMs
  let credentials = grpc.credentials.createInsecure()
  const ca = required(Env.agentCaFile)
  if (ca !== undefined) {
    try {
      credentials = grpc.credentials.createSsl(fs.readFileSync(ca))
    } catch (error) {
      return `${Env.agentCaFile}: cannot read "${ca}": ${(error as Error).message}`
    }
  }
  return {
    frameworkId: required(Env.frameworkId)!,
    executorId: required(Env.executorId)!,
    agentId: env[Env.agentId] ?? "",
    endpoint: required(Env.agentEndpoint)!,
    recoveryTimeoutMs,
    backoffMaxMs,
    credentials,
    token: required(Env.token)
  }
}

const hex = (uuid: Uint8Array) => Buffer.from(uuid).toString("hex")

/** Whether a failed subscription is worth retrying (the agent is away) or final (it refused). */
const isRefusal = (error: grpc.ServiceError) =>
  error.code === grpc.status.NOT_FOUND || error.code === grpc.status.FAILED_PRECONDITION ||
  error.code === grpc.status.PERMISSION_DENIED || error.code === grpc.status.INVALID_ARGUMENT ||
  error.code === grpc.status.UNAUTHENTICATED

/**
 * A transport over the agent's ExecutorService. It keeps what the agent has not acknowledged
 * (tasks launched but not reported on; updates not acknowledged), re-subscribes with them after
 * the stream breaks (an agent restart) with backoff until `recoveryTimeoutMs`, and ends the event
 * stream when the agent ends the subscription, refuses it, or stays away too long.
 */
export const make = (options: GrpcOptions): Effect.Effect<Transport, never, Scope.Scope> =>
  Effect.gen(function*() {
    const token = options.token
    const client = new v1.ExecutorServiceClient(
      options.endpoint,
      options.credentials,
      token === undefined ? {} : {
        interceptors: [(callOptions, nextCall) =>
          new grpc.InterceptingCall(nextCall(callOptions), {
            start: (metadata, listener, next) => {
              metadata.set("authorization", `Bearer ${token}`)
              next(metadata, listener)
            }
          })]
      }
    )
    yield* Effect.addFinalizer(() => Effect.sync(() => client.close()))
    const events = yield* Queue.unbounded<ExecutorEvent, Cause.Done>()
    /** Launched tasks with no update sent yet, by task id. */
    const unacknowledgedTasks = new Map<string, v1.TaskInfo>()
    /** Updates sent and not acknowledged, in the order sent (Map keeps insertion order). */
    const unacknowledgedUpdates = new Map<string, v1.TaskStatus>()
    let call: grpc.ClientReadableStream<v1.ExecutorServiceSubscribeResponse> | undefined
    yield* Effect.addFinalizer(() => Effect.sync(() => call?.cancel()))

    const observe = (event: ExecutorEvent) => {
      switch (event.$case) {
        case "launch":
          if (event.value.task !== undefined) unacknowledgedTasks.set(event.value.task.taskId, event.value.task)
          break
        case "launchGroup":
          for (const task of event.value.taskGroup?.tasks ?? []) unacknowledgedTasks.set(task.taskId, task)
          break
        case "acknowledged":
          unacknowledgedUpdates.delete(hex(event.value.uuid))
          break
      }
    }

    /** One subscription: "ended" when the agent ended it, else the error that broke it. */
    const subscribeOnce = Effect.callback<"ended" | "subscribed-then-lost", grpc.ServiceError>((resume) => {
      let subscribed = false
      const stream = client.subscribe({
        frameworkId: options.frameworkId,
        executorId: options.executorId,
        unacknowledgedTasks: [...unacknowledgedTasks.values()],
        unacknowledgedUpdates: [...unacknowledgedUpdates.values()]
      })
      call = stream
      stream.on("data", (response: v1.ExecutorServiceSubscribeResponse) => {
        const event = response.event
        if (event === undefined) return
        subscribed = true
        observe(event)
        Queue.offerUnsafe(events, event)
      })
      stream.on("error", (error: grpc.ServiceError) => {
        if (subscribed && !isRefusal(error)) resume(Effect.succeed("subscribed-then-lost"))
        else resume(Effect.fail(error))
      })
      stream.on("end", () => resume(Effect.succeed("ended")))
      return Effect.sync(() => stream.cancel())
    })

    // The connection loop: re-subscribes after a loss, until the agent ends the session, refuses
    // it, or the recovery timeout passes without a subscription.
    yield* Effect.gen(function*() {
      let lostAt = yield* Clock.currentTimeMillis
      let attempt = 0
      while (true) {
        const outcome = yield* Effect.result(subscribeOnce)
        const now = yield* Clock.currentTimeMillis
        if (outcome._tag === "Success") {
          if (outcome.success === "ended") break
          lostAt = now
          attempt = 0
          yield* Effect.logWarning("lost the agent; re-subscribing").pipe(Effect.annotateLogs({ agent: options.endpoint }))
          continue
        }
        if (isRefusal(outcome.failure)) {
          yield* Effect.logError("the agent refused the subscription").pipe(Effect.annotateLogs({ reason: outcome.failure.details }))
          break
        }
        if (now - lostAt > options.recoveryTimeoutMs) {
          yield* Effect.logError("no agent within the recovery timeout; giving up").pipe(
            Effect.annotateLogs({ agent: options.endpoint, recoveryTimeoutMs: options.recoveryTimeoutMs })
          )
          break
        }
        yield* Effect.sleep(Math.min(50 * 2 ** attempt++, options.backoffMaxMs))
      }
      yield* Queue.end(events)
    }).pipe(Effect.forkScoped)

    /** Sends statuses; an agent that is away gets them again on re-subscription. */
    const sendUpdate = (statuses: Array<v1.TaskStatus>) =>
      Effect.callback<void, grpc.ServiceError>((resume) => {
        client.update({ frameworkId: options.frameworkId, executorId: options.executorId, statuses }, (error) =>
          resume(error === null ? Effect.void : Effect.fail(error)))
      })
    const sendMessage = (data: Uint8Array) =>
      Effect.callback<void, grpc.ServiceError>((resume) => {
        client.message({ frameworkId: options.frameworkId, executorId: options.executorId, data }, (error) =>
          resume(error === null ? Effect.void : Effect.fail(error)))
      })

    return {
      frameworkId: options.frameworkId,
      executorId: options.executorId,
      agentId: options.agentId,
      events: Stream.fromQueue(events),
      onUpdate: (status) =>
        Effect.gen(function*() {
          unacknowledgedTasks.delete(status.taskId)
          unacknowledgedUpdates.set(hex(status.uuid), status)
          yield* sendUpdate([status]).pipe(
            Effect.catch((error) =>
              Effect.logWarning("status update not delivered; it is resent on re-subscription").pipe(
                Effect.annotateLogs({ taskId: status.taskId, terminal: TaskStates.isTerminal(status.state), error: error.message })
              )
            )
          )
        }),
      onMessage: (data) =>
        sendMessage(data).pipe(
          // Messages are best effort (as in Mesos), but a short agent hiccup should not lose one.
          Effect.retry({ times: 5, schedule: Schedule.spaced("200 millis") }),
          Effect.catch((error) => Effect.logWarning("message to the scheduler not delivered").pipe(Effect.annotateLogs({ error: error.message })))
        )
    } satisfies Transport
  })
