import { hostname } from "node:os"
import { v1 } from "@berth/proto"
import { Cause, Clock, Deferred, Duration, Effect, Exit, Fiber, Option, Pull, Queue, Schedule, Stream } from "effect"
import type { Scope } from "effect"
import { FrameworkRemoved, Unavailable } from "../SchedulerError.ts"
import type { InvalidOptions, SchedulerError } from "../SchedulerError.ts"
import type { Event, KillOptions, Options, ReconcileTask, Service } from "../SchedulerSession.ts"
import * as Batcher from "./batcher.ts"
import * as Grpc from "./grpc.ts"
import { validate } from "./options.ts"
import type { Config } from "./options.ts"

/** Acknowledgements gathered into one call: a status UPDATE batch rarely spans more. */
const ackBatchSize = 256
const ackWindow = Duration.millis(5)

/** A live subscription: the calls made on it go through the client it was opened on. */
interface Subscribed {
  readonly info: v1.SubscribeResponse_Subscribed
  readonly client: v1.SchedulerServiceClient
}

type State =
  | { readonly _tag: "Connecting"; readonly ready: Deferred.Deferred<Subscribed, SchedulerError> }
  | { readonly _tag: "Subscribed"; readonly current: Subscribed }
  | { readonly _tag: "Ended"; readonly error: SchedulerError }

const capabilities = [
  v1.FrameworkInfo_Capability.PARTITION_AWARE,
  v1.FrameworkInfo_Capability.MULTI_ROLE,
  v1.FrameworkInfo_Capability.RESERVATION_REFINEMENT,
  v1.FrameworkInfo_Capability.TASK_KILLING_STATE
]

// Errors after which subscribing again cannot help: the master refused this framework.
const isTerminal = (error: SchedulerError): boolean => {
  switch (error._tag) {
    case "FrameworkRemoved":
    case "InvalidArgument":
    case "SessionLost":
    case "Unauthenticated":
    case "PermissionDenied":
      return true
    case "RateLimited":
      return false
    case "CallFailed":
      return ["UNIMPLEMENTED", "UNAUTHENTICATED", "ALREADY_EXISTS", "OUT_OF_RANGE"].includes(error.code)
    case "NotLeader":
    case "Unavailable":
      return false
  }
}

const describe = (event: Event): string => event.$case.toUpperCase()

export const make = (options: Options): Effect.Effect<Service, InvalidOptions, Scope.Scope> =>
  Effect.gen(function*() {
    const config: Config = yield* validate(options)

    const events = yield* Queue.unbounded<Event, SchedulerError | Cause.Done>()
    const firstFrameworkId = yield* Deferred.make<string, SchedulerError>()
    let state: State = { _tag: "Connecting", ready: Deferred.makeUnsafe() }
    // Set by the first SUBSCRIBED (or the options) and sent on every re-subscription, so the
    // session fails over to the same framework instead of registering a new one.
    let frameworkId = config.framework.frameworkId
    // A redirect moves the session to the leader; an unreachable leader sends it back to the
    // configured master, which redirects again if it does not lead.
    // Several masters may be named ("a:5050,b:5050"): after a failure that names no leader, the
    // next one is tried; a standby's answer names the leader.
    const masters = config.master.split(",").map((m) => m.trim()).filter((m) => m !== "")
    let masterIndex = 0
    let target = masters[0]!
    let channel: { readonly address: string; readonly client: v1.SchedulerServiceClient } | undefined
    let tearingDown = false

    const clientFor = (address: string): v1.SchedulerServiceClient => {
      if (channel?.address !== address) {
        channel?.client.close()
        channel = {
          address,
          client: new v1.SchedulerServiceClient(address, config.transport.channel(), config.transport.options)
        }
      }
      return channel.client
    }

    const dropChannel = () => {
      channel?.client.close()
      channel = undefined
    }

    const subscribed = (current: Subscribed) =>
      Effect.sync(() => {
        const previous = state
        state = { _tag: "Subscribed", current }
        if (previous._tag === "Connecting") Deferred.doneUnsafe(previous.ready, Effect.succeed(current))
        Deferred.doneUnsafe(firstFrameworkId, Effect.succeed(current.info.frameworkId))
      })

    const disconnected = Effect.sync(() => {
      if (state._tag === "Subscribed") state = { _tag: "Connecting", ready: Deferred.makeUnsafe() }
    })

    /** Ends the session: calls fail with `error`; `events` fails with it, or ends when `clean`. */
    const ended = (error: SchedulerError, clean: boolean) =>
      Effect.gen(function*() {
        const previous = state
        if (previous._tag === "Ended") return
        state = { _tag: "Ended", error }
        if (previous._tag === "Connecting") Deferred.doneUnsafe(previous.ready, Effect.fail(error))
        Deferred.doneUnsafe(firstFrameworkId, Effect.fail(error))
        if (clean) yield* Queue.end(events)
        else yield* Queue.fail(events, error)
      })

    // What a call gets once the session is over: FrameworkRemoved, PermissionDenied and
    // Unauthenticated as they are (the caller must learn the framework is gone or refused),
    // anything else as this call being unable to run.
    const endedError = (call: string) => (error: SchedulerError): SchedulerError =>
      error._tag === "FrameworkRemoved" || error._tag === "PermissionDenied" || error._tag === "Unauthenticated"
        ? error
        : new Unavailable({ call, message: `the session ended: ${error.message}` })

    const awaitSubscribed = (call: string): Effect.Effect<Subscribed, SchedulerError> =>
      Effect.suspend(() => {
        switch (state._tag) {
          case "Subscribed":
            return Effect.succeed(state.current)
          case "Connecting":
            return Deferred.await(state.ready).pipe(Effect.mapError(endedError(call)))
          case "Ended":
            return Effect.fail(endedError(call)(state.error))
        }
      })

    /** Runs a call on the current subscription, waiting for one while disconnected. */
    const onSession = <A>(
      call: string,
      run: (session: v1.SessionRef, client: v1.SchedulerServiceClient) => Effect.Effect<A, SchedulerError>
    ): Effect.Effect<A, SchedulerError> =>
      awaitSubscribed(call).pipe(
        Effect.flatMap(({ client, info }) =>
          run({ frameworkId: info.frameworkId, streamId: info.streamId }, client)
        ),
        Effect.timeoutOrElse({
          duration: config.callTimeout,
          orElse: () =>
            Effect.fail(
              new Unavailable({
                call,
                message: `no subscribed session and answer within ${Duration.format(config.callTimeout)}`
              })
            )
        })
      )

    const subscribeRequest = (): v1.SubscribeRequest =>
      v1.SubscribeRequest.create({
        frameworkInfo: {
          frameworkId,
          name: config.framework.name,
          user: config.framework.user,
          principal: config.framework.principal,
          roles: [...config.framework.roles],
          failoverTimeoutSeconds: config.framework.failoverTimeoutSeconds,
          capabilities,
          hostname: hostname()
        }
      })

    const heartbeatLimit = (info: v1.SubscribeResponse_Subscribed): Option.Option<Duration.Duration> =>
      info.heartbeatIntervalSeconds > 0
        ? Option.some(Duration.millis(info.heartbeatIntervalSeconds * 1000 * config.heartbeatMissLimit))
        : Option.none()

    /**
     * One subscription: opens the stream, waits for SUBSCRIBED, then forwards events until the
     * stream ends, fails or falls silent. Always fails; `progress.subscribed` tells the caller
     * whether it got as far as SUBSCRIBED.
     */
    const subscribeOnce = (progress: { subscribed: boolean }): Effect.Effect<never, SchedulerError, Scope.Scope> =>
      Effect.gen(function*() {
        const client = clientFor(target)
        const requested = frameworkId
        const pull = yield* Stream.toPull(Grpc.subscribe(client, subscribeRequest(), requested))
        let buffer: ReadonlyArray<v1.SubscribeResponse> = []
        const next: Effect.Effect<Option.Option<v1.SubscribeResponse>, SchedulerError> = Effect.suspend(() => {
          const [head, ...rest] = buffer
          if (head !== undefined) {
            buffer = rest
            return Effect.succeed(Option.some(head))
          }
          return pull.pipe(
            Effect.map(([first, ...more]) => {
              buffer = more
              return Option.some(first)
            }),
            Pull.catchDone(() => Effect.succeed(Option.none()))
          )
        })
        const nextWithin = (limit: Duration.Duration, onTimeout: () => SchedulerError) =>
          next.pipe(Effect.timeoutOrElse({ duration: limit, orElse: () => Effect.fail(onTimeout()) }))
        const streamEnded = () => new Unavailable({ call: "Subscribe", message: "the master ended the event stream" })

        const first = yield* nextWithin(
          config.callTimeout,
          () =>
            new Unavailable({
              call: "Subscribe",
              message: `no SUBSCRIBED within ${Duration.format(config.callTimeout)}`
            })
        )
        if (Option.isNone(first)) return yield* streamEnded()
        const event = first.value.event
        if (event?.$case === "error") {
          return yield* new FrameworkRemoved({ frameworkId: requested, message: event.value.message })
        }
        if (event?.$case !== "subscribed") {
          return yield* new Unavailable({
            call: "Subscribe",
            message: `expected SUBSCRIBED as the first event, got ${event === undefined ? "an empty event" : describe(event)}`
          })
        }
        if (requested !== "" && event.value.frameworkId !== requested) {
          // Carrying on would silently turn this scheduler into a new, empty framework.
          return yield* new FrameworkRemoved({
            frameworkId: requested,
            message: `re-subscribed as framework ${requested} but the master answered as framework ` +
              `${event.value.frameworkId}; not continuing as a different framework`
          })
        }
        frameworkId = event.value.frameworkId
        progress.subscribed = true
        yield* subscribed({ info: event.value, client })
        yield* Effect.logInfo("subscribed").pipe(
          Effect.annotateLogs({ frameworkId, streamId: event.value.streamId, master: target })
        )
        yield* Queue.offer(events, event)

        // Silence longer than this means the connection is dead even if TCP has not noticed.
        let limit = heartbeatLimit(event.value)
        const silent = (duration: Duration.Duration) => () =>
          new Unavailable({
            call: "Subscribe",
            message: `nothing received for ${Duration.format(duration)} (${config.heartbeatMissLimit} heartbeats missed)`
          })
        while (true) {
          const received = Option.isSome(limit) ? yield* nextWithin(limit.value, silent(limit.value)) : yield* next
          if (Option.isNone(received)) return yield* streamEnded()
          const current = received.value.event
          // An event this client does not know (a newer master) carries nothing it can act on.
          if (current === undefined) continue
          if (current.$case === "error") {
            return yield* new FrameworkRemoved({ frameworkId, message: current.value.message })
          }
          if (current.$case === "subscribed") {
            limit = heartbeatLimit(current.value)
            yield* subscribed({ info: current.value, client })
          }
          yield* Queue.offer(events, current)
        }
      })

    /** Keeps a subscription open until a terminal error, re-subscribing with backoff. */
    const run = Effect.gen(function*() {
      let step = yield* Schedule.toStepWithSleep(config.reconnect)
      while (true) {
        const progress = { subscribed: false }
        const error = yield* Effect.flip(Effect.scoped(subscribeOnce(progress)))
        yield* disconnected
        if (tearingDown && error._tag === "FrameworkRemoved") return yield* ended(error, true)
        if (isTerminal(error)) return yield* ended(error, false)
        if (error._tag === "NotLeader" && error.leader !== "" && error.leader !== target) {
          target = error.leader
        } else {
          masterIndex = (masterIndex + 1) % masters.length
          target = masters[masterIndex]!
        }
        // A fresh channel per attempt: grpc-js would otherwise apply its own reconnect backoff
        // (up to minutes) on top of `reconnect`, and a half-dead connection would be reused.
        dropChannel()
        // During teardown the master closing the stream is expected, not worth a warning.
        if (!tearingDown) {
          yield* Effect.logWarning(`scheduler session interrupted, re-subscribing: ${error.message}`).pipe(
            Effect.annotateLogs({ frameworkId, master: target })
          )
        }
        // The backoff starts over once a subscription worked, but still applies, so a master
        // that accepts and drops at once is not hammered.
        if (progress.subscribed) step = yield* Schedule.toStepWithSleep(config.reconnect)
        const before = yield* Clock.currentTimeMillis
        const waited = yield* Effect.exit(step(error))
        if (Exit.isFailure(waited)) return yield* ended(error, false)
        // A rate-limited master said how long to wait; the backoff may have been shorter.
        if (error._tag === "RateLimited") {
          const waitedMs = (yield* Clock.currentTimeMillis) - before
          if (waitedMs < error.retryAfterMs) yield* Effect.sleep(Duration.millis(error.retryAfterMs - waitedMs))
        }
      }
    })

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        yield* ended(new Unavailable({ call: "Subscribe", message: "the session's scope was closed" }), true)
        dropChannel()
      })
    )
    const runFiber = yield* Effect.forkScoped(run)

    const acknowledgeBatch = yield* Batcher.make({
      maxSize: ackBatchSize,
      window: ackWindow,
      send: (acknowledgements: ReadonlyArray<v1.AcknowledgeRequest_Acknowledgement>) =>
        onSession("Acknowledge", (session, client) =>
          Grpc.unary<v1.AcknowledgeResponse>(
            "Acknowledge",
            session.frameworkId,
            (cb) => client.acknowledge({ session, acknowledgements: dedupe(acknowledgements, (a) => a.taskId) }, cb)
          )),
      onClose: () => new Unavailable({ call: "Acknowledge", message: "the session's scope was closed" })
    })

    const acknowledgeOperationBatch = yield* Batcher.make({
      maxSize: ackBatchSize,
      window: ackWindow,
      send: (acknowledgements: ReadonlyArray<v1.AcknowledgeOperationStatusRequest_Acknowledgement>) =>
        onSession("AcknowledgeOperationStatus", (session, client) =>
          Grpc.unary<v1.AcknowledgeOperationStatusResponse>(
            "AcknowledgeOperationStatus",
            session.frameworkId,
            (cb) =>
              client.acknowledgeOperationStatus(
                { session, acknowledgements: dedupe(acknowledgements, (a) => a.operationId) },
                cb
              )
          )),
      onClose: () => new Unavailable({ call: "AcknowledgeOperationStatus", message: "the session's scope was closed" })
    })

    const service: Service = {
      events: Stream.fromQueue(events),
      frameworkId: Deferred.await(firstFrameworkId),
      info: Effect.sync(() => state._tag === "Subscribed" ? Option.some(state.current.info) : Option.none()),

      accept: Effect.fn("SchedulerSession.accept")(function*(
        offerIds: ReadonlyArray<string>,
        operations: ReadonlyArray<v1.Operation>,
        filters?: v1.Filters
      ) {
        return yield* onSession("Accept", (session, client) =>
          Grpc.unary<v1.AcceptResponse>("Accept", session.frameworkId, (cb) =>
            client.accept({ session, offerIds: [...offerIds], operations: [...operations], filters }, cb)))
      }),

      decline: Effect.fn("SchedulerSession.decline")(function*(offerIds: ReadonlyArray<string>, filters?: v1.Filters) {
        yield* onSession("Decline", (session, client) =>
          Grpc.unary<v1.DeclineResponse>("Decline", session.frameworkId, (cb) =>
            client.decline({ session, offerIds: [...offerIds], filters }, cb)))
      }),

      kill: Effect.fn("SchedulerSession.kill")(function*(taskId: string, options?: KillOptions) {
        const kill: v1.KillRequest_Kill = {
          taskId,
          agentId: options?.agentId ?? "",
          killPolicy: options?.killPolicy
        }
        yield* onSession("Kill", (session, client) =>
          Grpc.unary<v1.KillResponse>("Kill", session.frameworkId, (cb) => client.kill({ session, kills: [kill] }, cb)))
      }),

      message: Effect.fn("SchedulerSession.message")(function*(agentId: string, executorId: string, data: Uint8Array) {
        yield* onSession("Message", (session, client) =>
          Grpc.unary<v1.MessageResponse>("Message", session.frameworkId, (cb) =>
            client.message({ session, agentId, executorId, data }, cb)))
      }),

      acknowledge: Effect.fn("SchedulerSession.acknowledge")(function*(status: v1.TaskStatus) {
        // Updates without a uuid (from the master, e.g. reconciliation) must not be acknowledged.
        if (status.uuid.length === 0) return
        yield* acknowledgeBatch({ agentId: status.agentId, taskId: status.taskId, uuid: status.uuid })
      }),

      acknowledgeOperation: Effect.fn("SchedulerSession.acknowledgeOperation")(function*(status: v1.OperationStatus) {
        if (status.uuid.length === 0) return
        yield* acknowledgeOperationBatch({ agentId: status.agentId, operationId: status.operationId, uuid: status.uuid })
      }),

      reconcile: Effect.fn("SchedulerSession.reconcile")(function*(tasks?: ReadonlyArray<ReconcileTask>) {
        const request = (tasks ?? []).map((t): v1.ReconcileRequest_Task => ({ taskId: t.taskId, agentId: t.agentId ?? "" }))
        yield* onSession("Reconcile", (session, client) =>
          Grpc.unary<v1.ReconcileResponse>("Reconcile", session.frameworkId, (cb) =>
            client.reconcile({ session, tasks: request }, cb)))
      }),

      revive: Effect.fn("SchedulerSession.revive")(function*(roles?: ReadonlyArray<string>) {
        yield* onSession("Revive", (session, client) =>
          Grpc.unary<v1.ReviveResponse>("Revive", session.frameworkId, (cb) =>
            client.revive({ session, roles: [...(roles ?? [])] }, cb)))
      }),

      suppress: Effect.fn("SchedulerSession.suppress")(function*(roles?: ReadonlyArray<string>) {
        yield* onSession("Suppress", (session, client) =>
          Grpc.unary<v1.SuppressResponse>("Suppress", session.frameworkId, (cb) =>
            client.suppress({ session, roles: [...(roles ?? [])] }, cb)))
      }),

      teardown: Effect.gen(function*() {
        tearingDown = true
        const torn = yield* onSession("Teardown", (session, client) =>
          Grpc.unary<v1.TeardownResponse>("Teardown", session.frameworkId, (cb) => client.teardown({ session }, cb)).pipe(
            Effect.as(session.frameworkId)
          )).pipe(Effect.onError(() => Effect.sync(() => (tearingDown = false))))
        yield* Fiber.interrupt(runFiber)
        yield* ended(new FrameworkRemoved({ frameworkId: torn, message: "torn down by this scheduler" }), true)
      }).pipe(Effect.withSpan("SchedulerSession.teardown"))
    }
    return service
  })

/** One acknowledgement per (key, uuid): a redelivered update may be acknowledged twice. */
const dedupe = <A extends { readonly uuid: Uint8Array }>(items: ReadonlyArray<A>, key: (a: A) => string): Array<A> => {
  const seen = new Set<string>()
  return items.filter((item) => {
    const id = `${key(item)}\u0000${Buffer.from(item.uuid).toString("hex")}`
    if (seen.has(id)) return false
    seen.add(id)
    return true
  })
}
