/**
 * The etcd test harness: one real etcd (Debian's `etcd` binary) per test
 * file, on free loopback ports with a temporary data directory, stopped by
 * pid when the file's tests are done. Without the binary, every test of the
 * file fails with the message saying how to install it: the etcd suites are
 * mandatory, never skipped.
 */
import { randomBytes } from "node:crypto"
import { afterAll, beforeAll } from "vitest"
import { Effect, Exit, Scope } from "effect"
import { EtcdServer, StateStore } from "@berth/storage"

export { EtcdServer }

/** Starts etcd before the file's tests; call it at the top level of a test file. */
export const useEtcd = (options?: EtcdServer.StartOptions): () => EtcdServer.EtcdServer => {
  let server: EtcdServer.EtcdServer | undefined
  let failure: unknown
  const scope = Effect.runSync(Scope.make())
  beforeAll(async () => {
    try {
      server = await Effect.runPromise(EtcdServer.start(options).pipe(Scope.provide(scope)))
    } catch (error) {
      // Not rethrown: a failing hook would mark the tests "skipped"; this way each of them fails, with this error.
      failure = error
    }
  }, 60_000)
  afterAll(() => Effect.runPromise(Scope.close(scope, Exit.void)), 30_000)
  return () => {
    if (server === undefined) throw failure ?? new Error("etcd is not running (useEtcd's beforeAll has not run)")
    return server
  }
}

/** A fresh key prefix per layer, so that tests sharing one etcd never see each other's keys. */
export const etcdLayer = (
  server: () => EtcdServer.EtcdServer,
  options?: Omit<StateStore.EtcdOptions, "endpoints" | "prefix">
) =>
  StateStore.layerEtcd({ endpoints: [server().endpoint], prefix: `test-${randomBytes(6).toString("hex")}/`, ...options })
