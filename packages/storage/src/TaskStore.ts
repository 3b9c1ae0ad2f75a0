/**
 * A framework's tasks: the task info it launched (its launch intent, written
 * before the Accept that launches it) and the last status reported for each
 * task. Info and status are separate keys, so that the frequent status
 * updates never rewrite the (larger) task info.
 *
 * The info and status types are the caller's, given as Schemas, so that the
 * SDK can keep the cluster API's own messages here.
 *
 * Keys (relative to the framework's namespace): `tasks/info/<taskId>`, `tasks/status/<taskId>`.
 *
 * @since 0.1.0
 */
import { Effect, Option, Stream } from "effect"
import type { Schema } from "effect"
import type { StateStore } from "./StateStore.ts"
import { StateStore as StateStoreTag } from "./StateStore.ts"
import type { StoreError } from "./StoreError.ts"
import { MAX_TXN_OPS } from "./internal/keys.ts"
import * as TypedStore from "./TypedStore.ts"

/**
 * One task: its info, and its last status if any was recorded.
 *
 * @since 0.1.0
 * @category models
 */
export interface TaskRecord<Info, Status> {
  readonly taskId: string
  readonly info: Info
  readonly status: Option.Option<Status>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface TaskStore<Info, Status> {
  /** Records the launch intent of one task (before launching it). */
  readonly putInfo: (taskId: string, info: Info) => Effect.Effect<void, StoreError | Schema.SchemaError>
  /** Records the launch intents of many tasks, all or nothing per group of 32 (a transaction's limit). */
  readonly putInfos: (
    tasks: ReadonlyArray<readonly [taskId: string, info: Info]>
  ) => Effect.Effect<void, StoreError | Schema.SchemaError>
  /** Records the last status of a task (whether or not its info is known, as after a reconciliation). */
  readonly putStatus: (taskId: string, status: Status) => Effect.Effect<void, StoreError | Schema.SchemaError>
  readonly get: (taskId: string) => Effect.Effect<Option.Option<TaskRecord<Info, Status>>, StoreError>
  /** Every task with info, sorted by task id. */
  readonly list: Effect.Effect<ReadonlyArray<TaskRecord<Info, Status>>, StoreError>
  /** Statuses without task info: tasks the framework did not launch, or whose info it removed. */
  readonly orphanStatuses: Effect.Effect<ReadonlyArray<readonly [taskId: string, status: Status]>, StoreError>
  /** Forgets a task (info and status together); succeeds with whether it existed. */
  readonly remove: (taskId: string) => Effect.Effect<boolean, StoreError>
}

/**
 * The task store of the current `StateStore`, with the given codecs for task
 * info and task status.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { StateStore, TaskStore } from "@berth/storage"
 *
 * const Info = Schema.Struct({ name: Schema.String, cmd: Schema.String })
 * const Status = Schema.Struct({ state: Schema.String, at: Schema.Number })
 *
 * const program = Effect.gen(function*() {
 *   const tasks = yield* TaskStore.make({ info: Info, status: Status })
 *   yield* tasks.putInfo("web-0", { name: "web", cmd: "./serve" }) // before Accept
 *   yield* tasks.putStatus("web-0", { state: "RUNNING", at: 1 })   // then acknowledge
 *   return yield* tasks.list
 * }).pipe(Effect.provide(StateStore.layerMemory))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <Info, InfoEncoded, Status, StatusEncoded>(codecs: {
  readonly info: Schema.Codec<Info, InfoEncoded>
  readonly status: Schema.Codec<Status, StatusEncoded>
}): Effect.Effect<TaskStore<Info, Status>, never, StateStore> =>
  Effect.gen(function*() {
    const store = yield* StateStoreTag
    const infos = yield* TypedStore.make(codecs.info, "tasks/info/")
    const statuses = yield* TypedStore.make(codecs.status, "tasks/status/")

    const all = <A>(typed: TypedStore.TypedStore<A>) =>
      Effect.map(Stream.runCollect(typed.listAll), (entries) => new Map(entries.map((e) => [e.key, e.value])))

    return {
      // Task records are bound to no lease, so LeaseExpired cannot happen.
      putInfo: (taskId, info) => infos.put(taskId, info).pipe(Effect.asVoid, Effect.catchTag("LeaseExpired", (e) => Effect.die(e))),
      putInfos: (tasks) =>
        Effect.forEach(
          chunk(tasks, MAX_TXN_OPS),
          (group) =>
            Effect.flatMap(
              Effect.forEach(group, ([taskId, info]) => infos.putOp(taskId, info)),
              (ops) =>
                Effect.catchTags(store.transaction(ops), {
                  // Unguarded puts with no lease can meet neither.
                  VersionConflict: (e) => Effect.die(e),
                  LeaseExpired: (e) => Effect.die(e)
                })
            ),
          { discard: true }
        ),
      putStatus: (taskId, status) =>
        statuses.put(taskId, status).pipe(Effect.asVoid, Effect.catchTag("LeaseExpired", (e) => Effect.die(e))),
      get: (taskId) =>
        Effect.gen(function*() {
          const [info, status] = yield* Effect.all([infos.get(taskId), statuses.get(taskId)])
          if (Option.isNone(info)) return Option.none()
          return Option.some({ taskId, info: info.value.value, status: Option.map(status, (e) => e.value) })
        }),
      list: Effect.gen(function*() {
        const [byId, statusById] = yield* Effect.all([all(infos), all(statuses)])
        return [...byId].map(([taskId, info]) => ({ taskId, info, status: Option.fromNullishOr(statusById.get(taskId)) }))
      }),
      orphanStatuses: Effect.gen(function*() {
        const [byId, statusById] = yield* Effect.all([all(infos), all(statuses)])
        return [...statusById].filter(([taskId]) => !byId.has(taskId))
      }),
      remove: (taskId) =>
        Effect.map(
          Effect.catchTags(store.transaction([infos.deleteOp(taskId), statuses.deleteOp(taskId)]), {
            VersionConflict: (e) => Effect.die(e),
            LeaseExpired: (e) => Effect.die(e)
          }),
          (result) => result.deleted.length > 0
        )
    } satisfies TaskStore<Info, Status>
  })

const chunk = <A>(items: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const groups: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) groups.push(items.slice(i, i + size))
  return groups
}
