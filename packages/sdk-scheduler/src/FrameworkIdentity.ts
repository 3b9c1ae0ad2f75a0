/**
 * A session whose framework id lives in storage: a restarted scheduler fails over to the
 * framework it registered before instead of registering a new one (which would orphan every
 * running task). The first SUBSCRIBED's id is stored (create-only, `FrameworkStore`); later
 * runs subscribe with it. The session itself refuses to continue as a different framework, and
 * a torn-down id fails the session loudly (`FrameworkRemoved`).
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { StateStore } from "@berth/storage"
 * import { FrameworkIdentity } from "@berth/sdk-scheduler"
 *
 * const Session = FrameworkIdentity.layerSession({ master: "127.0.0.1:5050", framework: { name: "kv" } }).pipe(
 *   Layer.provide(StateStore.layerNamespace("frameworks/kv/")),
 *   Layer.provide(StateStore.layerSqlite({ path: "kv.db" }))
 * )
 * ```
 *
 * @since 0.1.0
 */
import { FrameworkStore, type StateStore, type StoreError } from "@berth/storage"
import { Effect, Layer, Option } from "effect"
import type { InvalidOptions } from "./SchedulerError.ts"
import * as SchedulerSession from "./SchedulerSession.ts"

/**
 * `SchedulerSession.layer` with `framework.frameworkId` taken from the `FrameworkStore` of the
 * current `StateStore` (when one is stored and none is given), and the id the master assigns
 * stored as soon as the session knows it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerSession = (
  options: SchedulerSession.Options
): Layer.Layer<SchedulerSession.SchedulerSession, InvalidOptions | StoreError.StoreError, StateStore.StateStore> =>
  Layer.unwrap(
    Effect.gen(function*() {
      const frameworks = yield* FrameworkStore.make
      const stored = yield* frameworks.frameworkId
      const frameworkId = options.framework.frameworkId ?? Option.getOrUndefined(stored)
      const session = SchedulerSession.layer({
        ...options,
        framework: { ...options.framework, ...(frameworkId === undefined ? {} : { frameworkId }) }
      })
      const remember = Layer.effectDiscard(
        Effect.gen(function*() {
          const s = yield* SchedulerSession.SchedulerSession
          yield* s.frameworkId.pipe(
            Effect.flatMap((id) => frameworks.storeFrameworkId(id)),
            Effect.tap((record) => Effect.logDebug(`framework id ${record.frameworkId} stored`)),
            Effect.catchCause((cause) => Effect.logError("could not store the framework id", cause)),
            Effect.forkScoped
          )
        })
      )
      return Layer.provideMerge(remember, session)
    })
  )

/**
 * The framework id stored in the current `StateStore`, if any.
 *
 * @since 0.1.0
 * @category accessors
 */
export const stored: Effect.Effect<Option.Option<string>, StoreError.StoreError, StateStore.StateStore> = Effect.flatMap(
  FrameworkStore.make,
  (f) => f.frameworkId
)
