/**
 * The one consumer of a session's events, fanned out to the layers built on it. The session's
 * `events` stream has a single consumer; the offer manager, the task lifecycle and a service
 * runtime all need the events, in order. Each registers a handler; for every event the handlers
 * run one after another, in registration order, and the next event waits until they are done,
 * so a handler can rely on the ones registered before it having seen the event (the task
 * lifecycle holds offers on SUBSCRIBED before the offer manager sees the next offers).
 *
 * Nothing is taken from the session until `start`: build every layer that registers handlers,
 * then start (events wait in the session's queue meanwhile, none is lost).
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { StateStore } from "@berth/storage"
 * import { FrameworkIdentity, OfferManager, SchedulerEvents, TaskLifecycle } from "@berth/sdk-scheduler"
 *
 * const Scheduler = SchedulerEvents.layerStart.pipe(   // outermost: starts the flow last
 *   Layer.provideMerge(TaskLifecycle.layer()),
 *   Layer.provideMerge(OfferManager.layer()),
 *   Layer.provideMerge(SchedulerEvents.layer),
 *   Layer.provideMerge(FrameworkIdentity.layerSession({ master: "127.0.0.1:5050", framework: { name: "kv" } })),
 *   Layer.provideMerge(StateStore.layerSqlite({ path: ".berth/kv.db" }))
 * )
 * ```
 *
 * @since 0.1.0
 */
import type { Scope } from "effect"
import { Context, Deferred, Effect, Layer, PubSub, Ref, Stream } from "effect"
import type { SchedulerError } from "./SchedulerError.ts"
import { SchedulerSession, type Event } from "./SchedulerSession.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Registers a handler for the lifetime of the scope. Handlers run in registration order, one
   * event at a time; a failing handler is logged and does not stop the others. Keep them short
   * (enqueue, update state): a slow handler delays every event.
   */
  readonly register: (name: string, handler: (event: Event) => Effect.Effect<void>) => Effect.Effect<void, never, Scope.Scope>
  /** Starts taking events from the session (idempotent). */
  readonly start: Effect.Effect<void>
  /**
   * Every event from now on, for observers (metrics, logs, tests). Events published before the
   * stream is run are not replayed; use `register` for anything that must see every event.
   */
  readonly observe: Stream.Stream<Event>
  /** Completes when the session's event stream ends (teardown or scope close) or fails. */
  readonly ended: Effect.Effect<void, SchedulerError>
}

/**
 * @since 0.1.0
 * @category services
 */
export class SchedulerEvents extends Context.Service<SchedulerEvents, Service>()(
  "@berth/sdk-scheduler/SchedulerEvents"
) {}

/**
 * The event hub over the current `SchedulerSession`. It consumes nothing until `start`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<SchedulerEvents, never, SchedulerSession> = Layer.effect(
  SchedulerEvents,
  Effect.gen(function*() {
    const session = yield* SchedulerSession
    const handlers = yield* Ref.make<ReadonlyArray<{ readonly id: number; readonly name: string; readonly run: (e: Event) => Effect.Effect<void> }>>([])
    const pubsub = yield* Effect.acquireRelease(PubSub.unbounded<Event>(), PubSub.shutdown)
    const started = yield* Deferred.make<void>()
    const ended = yield* Deferred.make<void, SchedulerError>()
    let nextId = 0

    const dispatch = (event: Event) =>
      Effect.flatMap(Ref.get(handlers), (list) =>
        Effect.forEach(
          list,
          (h) =>
            h.run(event).pipe(
              Effect.catchCause((cause) => Effect.logError(`event handler ${h.name} failed`, cause))
            ),
          { discard: true }
        )).pipe(Effect.andThen(PubSub.publish(pubsub, event)))

    yield* Deferred.await(started).pipe(
      Effect.andThen(Stream.runForEach(session.events, dispatch)),
      Effect.exit,
      Effect.flatMap((exit) => Deferred.done(ended, exit)),
      Effect.forkScoped
    )

    return SchedulerEvents.of({
      register: (name, handler) =>
        Effect.acquireRelease(
          Ref.update(handlers, (list) => {
            const id = nextId++
            return [...list, { id, name, run: handler }]
          }).pipe(Effect.as(nextId - 1)),
          (id) => Ref.update(handlers, (list) => list.filter((h) => h.id !== id))
        ).pipe(Effect.asVoid),
      start: Deferred.succeed(started, undefined).pipe(Effect.asVoid),
      observe: Stream.fromPubSub(pubsub),
      ended: Deferred.await(ended)
    })
  })
)

/**
 * A layer that starts the hub when built: put it last (outermost), after every layer that
 * registers handlers.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerStart: Layer.Layer<never, never, SchedulerEvents> = Layer.effectDiscard(
  Effect.gen(function*() {
    const hub = yield* SchedulerEvents
    yield* hub.start
  })
)
