/**
 * @berth/storage: the state store behind Berth's masters, agents and frameworks.
 *
 * @since 0.1.0
 */

/**
 * The versioned key-value store service and its memory, SQLite and etcd layers.
 *
 * @since 0.1.0
 */
export * as StateStore from "./StateStore.ts"

/**
 * The storage errors: `StoreError`, `VersionConflict`, `LeaseExpired`, `RevisionCompacted`, `InvalidStoreUrl`.
 *
 * @since 0.1.0
 */
export * as StoreError from "./StoreError.ts"

/**
 * Builders for the operations of a `StateStore` transaction.
 *
 * @since 0.1.0
 */
export * as Txn from "./Txn.ts"

/**
 * Schema-typed views of one key prefix of a `StateStore`.
 *
 * @since 0.1.0
 */
export * as TypedStore from "./TypedStore.ts"

/**
 * Leases kept alive for the lifetime of a scope.
 *
 * @since 0.1.0
 */
export * as Lease from "./Lease.ts"

/**
 * Leader election on a key bound to a lease.
 *
 * @since 0.1.0
 */
export * as Election from "./Election.ts"

/**
 * A waiting mutex on a key bound to a lease.
 *
 * @since 0.1.0
 */
export * as Mutex from "./Mutex.ts"

/**
 * Schema versions and migrations of the data kept in a store.
 *
 * @since 0.1.0
 */
export * as Migrations from "./Migrations.ts"

/**
 * A framework's identity: its framework id.
 *
 * @since 0.1.0
 */
export * as FrameworkStore from "./FrameworkStore.ts"

/**
 * A framework's tasks: task info and last status per task.
 *
 * @since 0.1.0
 */
export * as TaskStore from "./TaskStore.ts"

/**
 * A framework's target configurations.
 *
 * @since 0.1.0
 */
export * as ConfigStore from "./ConfigStore.ts"

/**
 * A framework's plans: step status and operator overrides.
 *
 * @since 0.1.0
 */
export * as PlanStore from "./PlanStore.ts"

/**
 * A real etcd server in a child process, for tests and benchmarks.
 *
 * @since 0.1.0
 */
export * as EtcdServer from "./EtcdServer.ts"
