/**
 * Builders for the operations of `StateStore.transaction`.
 *
 * @since 0.1.0
 */
import type { Lease, TxnOp } from "./StateStore.ts"

/**
 * Writes `value` at `key`; with `expectedVersion`, only if the key is at that
 * version (0: absent), otherwise the whole transaction fails.
 *
 * @example
 * ```ts
 * import { Txn } from "@berth/storage"
 *
 * const op = Txn.put("tasks/t1", new TextEncoder().encode("RUNNING"), { expectedVersion: 3 })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const put = (
  key: string,
  value: Uint8Array,
  options?: { readonly expectedVersion?: number | undefined; readonly lease?: Lease | undefined }
): TxnOp => ({ _tag: "Put", key, value, expectedVersion: options?.expectedVersion, lease: options?.lease })

// `delete` is a reserved word, so the function is declared under another name and exported as `delete`.
const delete_ = (key: string, options?: { readonly expectedVersion?: number | undefined }): TxnOp => ({
  _tag: "Delete",
  key,
  expectedVersion: options?.expectedVersion
})

export {
  /**
   * Deletes `key` (nothing happens if it is absent); with `expectedVersion`,
   * only if the key is at that version, otherwise the whole transaction fails.
   *
   * @example
   * ```ts
   * import { Txn } from "@berth/storage"
   *
   * const op = Txn.delete("tasks/t1", { expectedVersion: 4 })
   * ```
   *
   * @since 0.1.0
   * @category constructors
   */
  delete_ as delete
}

/**
 * A guard that writes nothing: the transaction applies only if `key` is at
 * `expectedVersion` (0: absent).
 *
 * @example
 * ```ts
 * import { Txn } from "@berth/storage"
 *
 * // write the task only while the framework id is the one we registered with
 * const ops = [Txn.check("framework-id", 1), Txn.put("tasks/t1", new Uint8Array([1]))]
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const check = (key: string, expectedVersion: number): TxnOp => ({ _tag: "Check", key, expectedVersion })
