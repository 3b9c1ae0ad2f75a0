/**
 * A framework scheduler's session with the leading master: the Subscribe event stream, kept
 * alive across master restarts and failovers, and the calls that act on it.
 *
 * @since 0.1.0
 */
import type { v1 } from "@berth/proto"
import type { Duration, Effect, Option, Schedule, Stream } from "effect"
import { Context, Layer } from "effect"
import * as internal from "./internal/session.ts"
import type { InvalidOptions, SchedulerError } from "./SchedulerError.ts"

/**
 * One event of the session (the `event` oneof of `SubscribeResponse`), for example
 * `{ $case: "offers", value: { offers } }`.
 *
 * @since 0.1.0
 * @category models
 */
export type Event = NonNullable<v1.SubscribeResponse["event"]>

/**
 * How to reach the master and who the framework is.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The master's gRPC endpoint, "host:port", or several comma-separated (HA). A standby redirects the session to the leader. */
  readonly master: string
  readonly framework: {
    /** Shown in the master's state and UI; must not be empty. */
    readonly name: string
    /** Roles offers may be allocated to. Default `["*"]`. */
    readonly roles?: ReadonlyArray<string> | undefined
    readonly principal?: string | undefined
    /** The Unix user tasks run as by default. */
    readonly user?: string | undefined
    /**
     * How long the master keeps the framework and its tasks after the scheduler disconnects.
     * Default 7 days: a short timeout turns a scheduler outage into killed tasks.
     */
    readonly failoverTimeoutSeconds?: number | undefined
    /** The id of a framework to fail over to (the one a previous run stored). */
    readonly frameworkId?: string | undefined
  }
  /**
   * The delays between re-subscription attempts; the session gives up (and fails `events` with
   * the last error) when the schedule ends. It starts over after every SUBSCRIBED. Default:
   * exponential from 100 ms by a factor of 2, capped at 5 s, jittered, never ending.
   */
  readonly reconnect?: Schedule.Schedule<unknown, SchedulerError> | undefined
  /**
   * Heartbeats missed in a row (nothing at all received for `heartbeat_interval_seconds` times
   * this) before the stream is dropped as dead and re-subscribed. Default 5.
   */
  readonly heartbeatMissLimit?: number | undefined
  /**
   * Bounds every call, including the wait for a subscribed session when the call is made while
   * disconnected, and the wait for SUBSCRIBED after opening the stream. Default 30 seconds.
   */
  readonly callTimeout?: Duration.Input | undefined
  /**
   * Who the framework is to a master that authenticates: a principal and its secret (sent as
   * `authorization: Basic ...`) or a bearer token, on every call. With a principal,
   * `framework.principal` defaults to it (and must equal it when given). Use TLS: on a
   * plaintext channel the secret travels in the clear.
   */
  readonly credentials?: Credentials | undefined
  /**
   * Speaks TLS to the master. Each value is a PEM file path or PEM text: `ca` the authority that
   * signed the master's certificate (default: the system's roots), `cert` and `key` a client
   * certificate for a master that requires mutual TLS.
   */
  readonly tls?: Tls | undefined
}

/**
 * A principal and its secret, or a bearer token.
 *
 * @since 0.1.0
 * @category models
 */
export type Credentials =
  | { readonly principal: string; readonly secret: string }
  | { readonly token: string }

/**
 * TLS settings: PEM file paths or PEM text.
 *
 * @since 0.1.0
 * @category models
 */
export interface Tls {
  readonly ca?: string | undefined
  readonly cert?: string | undefined
  readonly key?: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface KillOptions {
  /** Lets the master find the task faster, and kill one it has not heard of yet. */
  readonly agentId?: string | undefined
  /** Overrides the task's own kill policy (its grace period). */
  readonly killPolicy?: v1.KillPolicy | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ReconcileTask {
  readonly taskId: string
  readonly agentId?: string | undefined
}

/**
 * What a `SchedulerSession` offers.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Every event of every subscription, in order. SUBSCRIBED comes again after each
   * re-subscription: offers received before it are void, and it is the moment to reconcile.
   * HEARTBEATs are included. An ERROR event is not emitted: it fails the stream with
   * `FrameworkRemoved`. The stream also fails when re-subscribing is hopeless (`InvalidArgument`
   * for a refused framework info, `Unauthenticated` for refused credentials, `PermissionDenied`
   * for a principal not authorised for its roles, or the last error once `reconnect` gives up;
   * `RateLimited` only delays the next attempt) and ends after
   * `teardown` or when the layer's scope closes.
   *
   * Single consumer: the events sit in one unbounded queue, so two consumers would each see a
   * part of them, and events nobody takes pile up. Run one long-lived consumer and fan out from
   * it (a PubSub) if several parts of the program need the events.
   */
  readonly events: Stream.Stream<Event, SchedulerError>
  /** The framework id, once the first SUBSCRIBED arrived; fails if the session ends first. */
  readonly frameworkId: Effect.Effect<string, SchedulerError>
  /** The current subscription (ids, heartbeat interval, master), or none while disconnected. */
  readonly info: Effect.Effect<Option.Option<v1.SubscribeResponse_Subscribed>>
  /** Applies operations to offers; unused offered resources return to the pool under `filters`. */
  readonly accept: (
    offerIds: ReadonlyArray<string>,
    operations: ReadonlyArray<v1.Operation>,
    filters?: v1.Filters
  ) => Effect.Effect<v1.AcceptResponse, SchedulerError>
  /** Declines offers; their agents are not offered again for `filters.refuseSeconds` (default 5 s). */
  readonly decline: (offerIds: ReadonlyArray<string>, filters?: v1.Filters) => Effect.Effect<void, SchedulerError>
  readonly kill: (taskId: string, options?: KillOptions) => Effect.Effect<void, SchedulerError>
  /**
   * Sends bytes to one of the framework's custom executors on an agent (relayed by the master;
   * at most once, like Mesos framework messages). Executors answer with `message` events.
   */
  readonly message: (agentId: string, executorId: string, data: Uint8Array) => Effect.Effect<void, SchedulerError>
  /**
   * Acknowledges a status update so the agent stops resending it; a no-op for updates without a
   * uuid. Acknowledgements requested within a few milliseconds of each other (up to 256) go out
   * in one Acknowledge call; this completes when that call did. Acknowledge only after the
   * status is persisted: an acknowledged update is never sent again.
   */
  readonly acknowledge: (status: v1.TaskStatus) => Effect.Effect<void, SchedulerError>
  /** Like `acknowledge`, for operation status updates (batched the same way). */
  readonly acknowledgeOperation: (status: v1.OperationStatus) => Effect.Effect<void, SchedulerError>
  /** Asks for the latest state of these tasks, or of all the framework's tasks when omitted. */
  readonly reconcile: (tasks?: ReadonlyArray<ReconcileTask>) => Effect.Effect<void, SchedulerError>
  /** Clears filters and resumes offers for these roles (all when omitted). */
  readonly revive: (roles?: ReadonlyArray<string>) => Effect.Effect<void, SchedulerError>
  /** Stops offers for these roles (all when omitted) until `revive`. */
  readonly suppress: (roles?: ReadonlyArray<string>) => Effect.Effect<void, SchedulerError>
  /**
   * Ends the framework for good: the master kills its tasks and its id can never subscribe
   * again. `events` then ends.
   */
  readonly teardown: Effect.Effect<void, SchedulerError>
}

/**
 * The session service. Calls made while the session is disconnected wait for the next
 * SUBSCRIBED (up to `callTimeout`) and then carry its framework id and stream id.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { SchedulerSession } from "@berth/sdk-scheduler"
 *
 * const program = Effect.gen(function*() {
 *   const session = yield* SchedulerSession.SchedulerSession
 *   yield* session.events.pipe(
 *     Stream.runForEach((event) => {
 *       switch (event.$case) {
 *         case "offers":
 *           return session.decline(event.value.offers.map((o) => o.offerId), { refuseSeconds: 60 })
 *         case "update":
 *           return Effect.forEach(event.value.statuses, session.acknowledge, { concurrency: "unbounded" })
 *         default:
 *           return Effect.void
 *       }
 *     })
 *   )
 * }).pipe(Effect.provide(SchedulerSession.layer({ master: "127.0.0.1:5050", framework: { name: "hello" } })))
 * ```
 *
 * @since 0.1.0
 * @category services
 */
export class SchedulerSession extends Context.Service<SchedulerSession, Service>()(
  "@berth/sdk-scheduler/SchedulerSession"
) {}

/**
 * Opens the session for the layer's lifetime: subscribes (failing over to
 * `framework.frameworkId` when given), re-subscribes with backoff and the same framework id
 * whenever the stream ends, fails or falls silent, and follows a non-leading master's redirect.
 * It never registers a new framework in place of a removed one. Closing the scope cancels the
 * stream and closes the channel. Building the layer does not wait for the master; it fails only
 * with `InvalidOptions`.
 *
 * @example
 * ```ts
 * import { SchedulerSession } from "@berth/sdk-scheduler"
 *
 * const SessionLive = SchedulerSession.layer({
 *   master: "127.0.0.1:5050",
 *   framework: { name: "kv-store", roles: ["kv"], frameworkId: "stored-id-from-last-run" }
 * })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<SchedulerSession, InvalidOptions> =>
  Layer.effect(SchedulerSession, internal.make(options))
