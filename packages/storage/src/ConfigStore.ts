/**
 * A framework's configurations: every configuration it has deployed, by id,
 * and which one is the current target. Changing the target is guarded, so the
 * target always names a stored configuration.
 *
 * Keys (relative to the framework's namespace): `configs/<id>`, `config-target`.
 *
 * @since 0.1.0
 */
import { Effect, Option, Schedule, Schema, Stream } from "effect"
import type { StateStore } from "./StateStore.ts"
import { StateStore as StateStoreTag } from "./StateStore.ts"
import type { LeaseExpired, StoreError, VersionConflict } from "./StoreError.ts"
import * as TypedStore from "./TypedStore.ts"

/**
 * `setTarget` named a configuration that is not stored. Nothing was changed.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ConfigStore } from "@berth/storage"
 *
 * const deploy = (configs: ConfigStore.ConfigStore<unknown>, id: string) =>
 *   configs.setTarget(id).pipe(Effect.catchTag("ConfigNotFound", (e) => Effect.fail(e.message)))
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class ConfigNotFound extends Schema.TaggedError<ConfigNotFound>()("ConfigNotFound", {
  id: Schema.String
}) {
  override get message(): string {
    return `configuration ${JSON.stringify(this.id)} is not stored: store it with put before making it the target`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ConfigStore<Config> {
  /** Stores a configuration under `id` (replacing one stored under the same id). */
  readonly put: (id: string, config: Config) => Effect.Effect<void, StoreError | Schema.SchemaError>
  readonly get: (id: string) => Effect.Effect<Option.Option<Config>, StoreError>
  /** Every stored configuration, sorted by id. */
  readonly list: Effect.Effect<ReadonlyArray<readonly [id: string, config: Config]>, StoreError>
  /** Makes a stored configuration the target; fails with `ConfigNotFound` if it is not stored. */
  readonly setTarget: (id: string) => Effect.Effect<void, StoreError | ConfigNotFound>
  /** The target configuration, if one was set. */
  readonly target: Effect.Effect<Option.Option<readonly [id: string, config: Config]>, StoreError>
  /** Deletes every configuration except the target and those in `keep` (e.g. still used by tasks); returns their ids. */
  readonly prune: (keep: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<string>, StoreError>
}

const Target = Schema.Struct({ id: Schema.String })

/**
 * The configuration store of the current `StateStore`, with the given codec.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { ConfigStore, StateStore } from "@berth/storage"
 *
 * const ServiceConfig = Schema.Struct({ count: Schema.Int, image: Schema.String })
 *
 * const program = Effect.gen(function*() {
 *   const configs = yield* ConfigStore.make(ServiceConfig)
 *   yield* configs.put("v2", { count: 3, image: "kv:2" })
 *   yield* configs.setTarget("v2")
 *   return yield* configs.target
 * }).pipe(Effect.provide(StateStore.layerMemory))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <Config, Encoded>(
  codec: Schema.Codec<Config, Encoded>
): Effect.Effect<ConfigStore<Config>, never, StateStore> =>
  Effect.gen(function*() {
    const store = yield* StateStoreTag
    const configs = yield* TypedStore.make(codec, "configs/")
    const targets = yield* TypedStore.make(Target, "")
    const targetId = Effect.map(targets.get("config-target"), Option.map((entry) => entry.value.id))

    return {
      put: (id, config) => configs.put(id, config).pipe(Effect.asVoid, Effect.catchTag("LeaseExpired", (e) => Effect.die(e))),
      get: (id) => Effect.map(configs.get(id), Option.map((entry) => entry.value)),
      list: Effect.map(Stream.runCollect(configs.listAll), (entries) => entries.map((e) => [e.key, e.value] as const)),
      setTarget: (id) =>
        Effect.gen(function*() {
          const config = yield* configs.get(id)
          if (Option.isNone(config)) return yield* new ConfigNotFound({ id })
          const target = yield* targets.putOp("config-target", { id }).pipe(Effect.orDie)
          // Guarded by the configuration's version, so a concurrent prune cannot leave the target dangling.
          yield* store.transaction([configs.checkOp(id, config.value.version), target]).pipe(
            Effect.catchTags({
              VersionConflict: () => Effect.fail(new ConfigNotFound({ id })),
              LeaseExpired: (e) => Effect.die(e)
            })
          )
        }),
      target: Effect.gen(function*() {
        const id = yield* targetId
        if (Option.isNone(id)) return Option.none()
        const config = yield* configs.get(id.value)
        return Option.map(config, (entry) => [id.value, entry.value] as const)
      }),
      prune: (keep) => {
        const attempt = Effect.gen(function*() {
          const target = yield* targets.get("config-target")
          const kept = new Set([...keep, ...Option.toArray(Option.map(target, (entry) => entry.value.id))])
          const targetVersion = Option.match(target, { onNone: () => 0, onSome: (entry) => entry.version })
          const ids = yield* Effect.map(Stream.runCollect(configs.listAll), (entries) => entries.map((e) => e.key))
          const doomed = ids.filter((id) => !kept.has(id))
          for (const id of doomed) {
            // Guarded by the target's version: if the target moved meanwhile, start over with the new one.
            yield* store.transaction([targets.checkOp("config-target", targetVersion), configs.deleteOp(id)])
          }
          return doomed as ReadonlyArray<string>
        })
        return attempt.pipe(
          Effect.retry({
            while: (error: StoreError | VersionConflict | LeaseExpired) => error._tag === "VersionConflict",
            schedule: Schedule.recurs(20)
          }),
          Effect.catchTags({ VersionConflict: (e) => Effect.die(e), LeaseExpired: (e) => Effect.die(e) })
        )
      }
    } satisfies ConfigStore<Config>
  })
