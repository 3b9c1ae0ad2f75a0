/**
 * @berth/storage: the state store behind Berth's masters, agents and frameworks.
 *
 * @since 0.1.0
 */

/**
 * The versioned key-value store service and its memory and SQLite layers.
 *
 * @since 0.1.0
 */
export * as StateStore from "./StateStore.ts"

/**
 * The storage errors: `StoreError`, `VersionConflict`, `InvalidStoreUrl`.
 *
 * @since 0.1.0
 */
export * as StoreError from "./StoreError.ts"

/**
 * Schema-typed views of one key prefix of a `StateStore`.
 *
 * @since 0.1.0
 */
export * as TypedStore from "./TypedStore.ts"
