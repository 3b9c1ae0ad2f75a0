/**
 * Schema versions of the data kept in a store, and the migrations between
 * them. The version lives in one key; `run` applies the missing migrations in
 * order, one process at a time (under a `Mutex`), and refuses to touch data
 * written by a newer version of the software.
 *
 * @since 0.1.0
 */
import type { Duration } from "effect"
import { Cause, Clock, Effect, Option, Schema } from "effect"
import * as Mutex from "./Mutex.ts"
import { StateStore } from "./StateStore.ts"
import type { LeaseExpired, StoreError } from "./StoreError.ts"
import * as TypedStore from "./TypedStore.ts"

/**
 * One step from version `version - 1` to `version`. `migrate` should be
 * idempotent: a process that dies after migrating but before recording the
 * new version runs it again.
 *
 * @since 0.1.0
 * @category models
 */
export interface Migration<E = never, R = never> {
  readonly version: number
  readonly description: string
  readonly migrate: Effect.Effect<void, E, R>
}

/**
 * The stored schema version is newer than any migration this build knows:
 * the data was written by a newer release. Nothing was changed.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Migrations } from "@berth/storage"
 *
 * const start = Migrations.run({ migrations: Migrations.frameworkState }).pipe(
 *   Effect.catchTag("SchemaVersionTooNew", (e) => Effect.die(e.message))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class SchemaVersionTooNew extends Schema.TaggedError<SchemaVersionTooNew>()("SchemaVersionTooNew", {
  key: Schema.String,
  found: Schema.Number,
  supported: Schema.Number
}) {
  override get message(): string {
    return `the data under ${JSON.stringify(this.key)} has schema version ${this.found}, but this build knows ` +
      `versions up to ${this.supported}: it was written by a newer release; upgrade instead of downgrading`
  }
}

/**
 * A migration failed (or the list of migrations is malformed). The stored
 * version stays at the last migration that succeeded.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Migrations } from "@berth/storage"
 *
 * const start = Migrations.run({ migrations: [] }).pipe(
 *   Effect.catchTag("MigrationFailed", (e) => Effect.logError(e.message))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class MigrationFailed extends Schema.TaggedError<MigrationFailed>()("MigrationFailed", {
  key: Schema.String,
  version: Schema.Number,
  message: Schema.String,
  cause: Schema.optional(Schema.Defect())
}) {}

/**
 * What `run` did: the version before and after, and the migrations applied.
 *
 * @since 0.1.0
 * @category models
 */
export interface MigrationReport {
  readonly from: number
  readonly to: number
  readonly applied: ReadonlyArray<number>
}

const VersionRecord = Schema.Struct({
  version: Schema.Int,
  description: Schema.String,
  migratedAt: Schema.Number
})

/**
 * The migrations of the built-in framework state (`FrameworkStore`,
 * `TaskStore`, `ConfigStore`, `PlanStore`) under one framework's namespace.
 * Version 1 is the first layout; later releases append to this list.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Migrations, StateStore } from "@berth/storage"
 *
 * const ready = Migrations.run({ migrations: Migrations.frameworkState }).pipe(
 *   Effect.provide(StateStore.layerNamespace("frameworks/hello/").pipe(Layer.provide(StateStore.layerMemory)))
 * )
 * ```
 *
 * @since 0.1.0
 * @category migrations
 */
export const frameworkState: ReadonlyArray<Migration> = [
  {
    version: 1,
    description: "framework-id, tasks/info/<id>, tasks/status/<id>, configs/<id>, config-target, plans/steps/..., plans/overrides/...",
    migrate: Effect.void
  }
]

/**
 * The schema version recorded at `key` (0 when none is).
 *
 * @example
 * ```ts
 * import { Migrations } from "@berth/storage"
 *
 * const version = Migrations.current()
 * ```
 *
 * @since 0.1.0
 * @category getters
 */
export const current = (key = "schema-version"): Effect.Effect<number, StoreError, StateStore> =>
  Effect.gen(function*() {
    const versions = yield* TypedStore.make(VersionRecord, "")
    return Option.match(yield* versions.get(key), { onNone: () => 0, onSome: (entry) => entry.value.version })
  })

/**
 * Brings the data up to the last of `migrations` (numbered 1, 2, 3, ... in
 * order), holding the lock `<key>.lock` so that of several processes starting
 * together exactly one migrates while the others wait and then find nothing
 * to do. Run it at startup, before using the stores.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Migrations, StateStore, TaskStore } from "@berth/storage"
 *
 * const renameField: Migrations.Migration<unknown, StateStore.StateStore> = {
 *   version: 2,
 *   description: "tasks: rename host to agentHost",
 *   migrate: Effect.log("rewriting tasks/...")
 * }
 * const start = Migrations.run({ migrations: [...Migrations.frameworkState, renameField] })
 * ```
 *
 * @since 0.1.0
 * @category migrations
 */
export const run = <E, R>(options: {
  readonly migrations: ReadonlyArray<Migration<E, R>>
  /** Where the version is recorded. Defaults to `"schema-version"`. */
  readonly key?: string | undefined
  /** The lease TTL of the migration lock. Defaults to 30 seconds. */
  readonly lockTtl?: Duration.Input | undefined
}): Effect.Effect<
  MigrationReport,
  StoreError | LeaseExpired | SchemaVersionTooNew | MigrationFailed,
  StateStore | R
> =>
  Effect.gen(function*() {
    const key = options.key ?? "schema-version"
    const migrations = options.migrations
    for (const [index, migration] of migrations.entries()) {
      if (migration.version !== index + 1) {
        return yield* new MigrationFailed({
          key,
          version: migration.version,
          message: `the migrations must be numbered 1, 2, 3, ... in order, but migration ${index + 1} of the list ` +
            `has version ${migration.version}`
        })
      }
    }
    const latest = migrations.length
    yield* Mutex.lock(`${key}.lock`, { ttl: options.lockTtl ?? "30 seconds" })
    const versions = yield* TypedStore.make(VersionRecord, "")
    const stored = yield* versions.get(key)
    const from = Option.match(stored, { onNone: () => 0, onSome: (entry) => entry.value.version })
    if (from > latest) return yield* new SchemaVersionTooNew({ key, found: from, supported: latest })
    let version = Option.match(stored, { onNone: () => 0, onSome: (entry) => entry.version })
    const applied: Array<number> = []
    for (const migration of migrations.slice(from)) {
      yield* migration.migrate.pipe(
        Effect.catchCause((cause) =>
          Effect.fail(
            new MigrationFailed({
              key,
              version: migration.version,
              message: `migration ${migration.version} (${migration.description}) failed: ${causeMessage(cause)}; ` +
                `the data stays at version ${migration.version - 1}`,
              cause
            })
          )
        )
      )
      const record = { version: migration.version, description: migration.description, migratedAt: yield* Clock.currentTimeMillis }
      // Under the lock nobody else writes the version; the guard makes sure of it.
      const written = yield* versions.compareAndSet(key, version, record).pipe(
        Effect.catchTags({
          VersionConflict: (error) =>
            Effect.fail(new MigrationFailed({ key, version: migration.version, message: `the version record changed under the migration lock: ${error.message}` })),
          SchemaError: (error) => Effect.die(error)
        })
      )
      version = written.version
      applied.push(migration.version)
    }
    return { from, to: Math.max(from, latest), applied } satisfies MigrationReport
  }).pipe(Effect.scoped)

const causeMessage = <E>(cause: Cause.Cause<E>): string => {
  const error = Cause.squash(cause)
  return error instanceof Error ? error.message : String(error)
}
