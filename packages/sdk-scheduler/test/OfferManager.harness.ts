/**
 * Builds the scheduler stack (session with a stored framework id, event hub, offer manager,
 * optionally the task lifecycle) in a scope of its own, so a test can stop a scheduler and
 * start another one on the same storage.
 */
import { FrameworkIdentity, OfferManager, SchedulerEvents, SchedulerSession, TaskLifecycle } from "@berth/sdk-scheduler"
import { StateStore } from "@berth/storage"
import { Context, Effect, Exit, Layer, Scope } from "effect"

export interface Stack {
  readonly session: SchedulerSession.Service
  readonly offers: OfferManager.Service
  readonly tasks: TaskLifecycle.Service | undefined
  readonly stop: Effect.Effect<void>
}

export const startStack = (options: {
  readonly master: string
  readonly store: StateStore.StateStore["Service"]
  readonly offers?: OfferManager.Options
  readonly lifecycle?: TaskLifecycle.Options | false
  readonly name?: string
}) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const base = Layer.mergeAll(
      FrameworkIdentity.layerSession({ master: options.master, framework: { name: options.name ?? "offers-test" } })
    ).pipe(Layer.provideMerge(Layer.succeed(StateStore.StateStore, options.store)))
    const withHub = SchedulerEvents.layer.pipe(Layer.provideMerge(base))
    const withOffers = OfferManager.layer(options.offers).pipe(Layer.provideMerge(withHub))
    // Without the lifecycle something must acknowledge updates, or the agents never send the next.
    const acker = Layer.effectDiscard(Effect.gen(function*() {
      const hub = yield* SchedulerEvents.SchedulerEvents
      const session = yield* SchedulerSession.SchedulerSession
      yield* hub.register("test-acker", (event) =>
        event.$case === "update"
          ? Effect.forEach(event.value.statuses, (s) => Effect.ignore(session.acknowledge(s)), { discard: true })
          : Effect.void)
    }))
    const context = options.lifecycle === false
      ? yield* Layer.build(SchedulerEvents.layerStart.pipe(Layer.provideMerge(acker), Layer.provideMerge(withOffers))).pipe(Scope.provide(scope))
      : yield* Layer.build(
        SchedulerEvents.layerStart.pipe(Layer.provideMerge(TaskLifecycle.layer(options.lifecycle ?? {}).pipe(Layer.provideMerge(withOffers))))
      ).pipe(Scope.provide(scope))
    const stack: Stack = {
      session: Context.get(context, SchedulerSession.SchedulerSession),
      offers: Context.get(context, OfferManager.OfferManager),
      tasks: options.lifecycle === false ? undefined : Context.get(context as unknown as Context.Context<TaskLifecycle.TaskLifecycle>, TaskLifecycle.TaskLifecycle),
      stop: Scope.close(scope, Exit.void)
    }
    yield* Effect.addFinalizer(() => stack.stop)
    return stack
  })

/** Polls `check` until it returns a value (not undefined), every 50 ms, up to `timeoutMs`. */
export const eventually = <A, E, R>(description: string, check: Effect.Effect<A | undefined, E, R>, timeoutMs = 20_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (true) {
      const value = yield* check
      if (value !== undefined) return value
      if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${description}`))
      yield* Effect.sleep("50 millis")
    }
  })
