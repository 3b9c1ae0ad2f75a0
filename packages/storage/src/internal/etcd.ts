/**
 * The etcd backend, on the raw v3 RPCs of the `etcd3` client (KV, Lease,
 * Watch), so that every operation is exactly one etcd request (or one
 * transaction) whose semantics we control: versions, revisions and leases are
 * etcd's own.
 *
 * Layout under the configured prefix P (user keys never contain NUL):
 *   P<key>                         the value, or a chunk manifest
 *   P\0c/<key>\0<upload>/<index>   chunks of a value too large for one etcd request
 */
import { randomBytes } from "node:crypto"
import {
  EtcdAuthenticationFailedError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  castGrpcError,
  Etcd3,
  GRPCDeadlineExceededError,
  GRPCResourceExhastedError,
  GRPCUnauthenticatedError,
  GRPCUnavailableError
} from "etcd3"
import type { IKeyValue, IOptions, IRequestOp, IResponseOp, ITxnRequest, IWatchResponse } from "etcd3"
import { Cause, Clock, Deferred, Duration, Effect, Exit, Option, Queue, Redacted, Schedule, Semaphore, Stream } from "effect"
import type { Scope } from "effect"
import type {
  DeleteOptions,
  EtcdOptions,
  Entry,
  Lease,
  ListOptions,
  PutOptions,
  StateStore,
  TxnOp,
  TxnResult,
  WatchEvent,
  WatchOptions
} from "../StateStore.ts"
import type { StoreError } from "../StoreError.ts"
import { LeaseExpired, RevisionCompacted, VersionConflict } from "../StoreError.ts"
import { compareKeys, makeFailures } from "./keys.ts"

/** Marks a stored value as a chunk manifest. A user value that happens to start with it is stored chunked too. */
const MAGIC = Buffer.from("\u0000berth-chunked-v1\u0000", "utf8")
const DEFAULT_MAX_REQUEST_BYTES = 1.5 * 1024 * 1024

interface Manifest {
  readonly upload: string
  readonly chunks: number
  readonly size: number
}

/** A failure with what a retry policy needs to know about it. */
class Failed {
  readonly error: StoreError | LeaseExpired
  /** The request may not have reached etcd (unreachable, timed out): worth retrying a read. */
  readonly transient: boolean
  /** The request certainly did not reach etcd: even a write may be retried. */
  readonly unsent: boolean
  constructor(error: StoreError | LeaseExpired, transient: boolean, unsent: boolean) {
    this.error = error
    this.transient = transient
    this.unsent = unsent
  }
}

/** No retries or circuit breaking inside `etcd3`: the Effect `Schedule`s below are the only policy. */
const passthrough = {
  _altReturn: undefined as never,
  onSuccess: () => ({ dispose: () => {} }),
  onFailure: () => ({ dispose: () => {} }),
  execute: <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T, signal?: AbortSignal): Promise<T> =>
    Promise.resolve().then(() => fn({ signal: signal ?? new AbortController().signal }))
}

const prefixEnd = (prefix: Buffer): Buffer => {
  const end = Buffer.from(prefix)
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1
      return end.subarray(0, i + 1)
    }
  }
  // No upper bound: etcd reads range_end "\0" as "to the end of the keyspace".
  return Buffer.from([0])
}

const num = (value: string | number | undefined | null): number => Number(value ?? 0)

// Retry delays pace network I/O against a real server whose own clock is real; they must not stall when
// a TestClock freezes `Clock` in the caller's tests.
const liveClock = Clock.Clock.defaultValue()
const onLiveClock = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provideService(effect, Clock.Clock, liveClock)

export const make = (options: EtcdOptions): Effect.Effect<StateStore["Service"], StoreError, Scope.Scope> =>
  Effect.gen(function*() {
    const endpoints = typeof options.endpoints === "string" ? [options.endpoints] : [...(options.endpoints ?? [])]
    const subject = `etcd store at ${endpoints.join(",")}`
    const failures = makeFailures("etcd", subject)
    const refuse = (detail: string) => Effect.fail(failures.error("open", undefined, detail))

    if (endpoints.length === 0 || endpoints.some((e) => typeof e !== "string" || e === "")) {
      return yield* refuse("at least one endpoint is required (e.g. \"http://127.0.0.1:2379\")")
    }
    const prefix = options.prefix ?? "berth/"
    if (typeof prefix !== "string" || prefix.includes("\u0000")) return yield* refuse("the prefix must be a string without NUL")
    const maxRequestBytes = options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES
    if (!Number.isSafeInteger(maxRequestBytes) || maxRequestBytes < 64 * 1024) {
      return yield* refuse(`maxRequestBytes must be an integer of at least 65536, got ${maxRequestBytes}`)
    }
    const timeout = Duration.fromInput(options.requestTimeout ?? "5 seconds")
    if (Option.isNone(timeout) || !Duration.isFinite(timeout.value) || Duration.toMillis(timeout.value) <= 0) {
      return yield* refuse(`requestTimeout must be a positive finite duration, got ${String(options.requestTimeout)}`)
    }
    const timeoutMs = Duration.toMillis(timeout.value)
    // Room for keys, the other operations of a transaction and gRPC framing.
    const chunkSize = Math.floor(maxRequestBytes * 2 / 3)
    const readRetry: Schedule.Schedule<unknown, unknown> = options.retry ??
      Schedule.max([Schedule.exponential("50 millis"), Schedule.recurs(4)])
    const watchRetry = Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("2 seconds")])

    const hosts = endpoints.map((e) => (/^https?:\/\//.test(e) ? e : `http://${e}`))
    const pem = (value: string | Uint8Array | undefined) => value === undefined ? undefined : Buffer.from(value)
    const clientOptions: IOptions = {
      hosts,
      dialTimeout: timeoutMs,
      // -1: no limit on replies; our own chunking keeps requests under etcd's limit.
      grpcOptions: { "grpc.max_receive_message_length": -1 },
      faultHandling: { host: () => passthrough, global: passthrough },
      // gRPC deadlines are wall-clock instants by definition; this is I/O plumbing, not logic time.
      defaultCallOptions: (context) => context.isStream ? {} : { deadline: Date.now() + timeoutMs },
      ...(options.tls === undefined ? {} : {
        credentials: {
          rootCertificate: pem(options.tls.ca) as Buffer,
          ...(options.tls.key === undefined ? {} : { privateKey: pem(options.tls.key)! }),
          ...(options.tls.cert === undefined ? {} : { certChain: pem(options.tls.cert)! })
        }
      }),
      ...(options.auth === undefined ? {} : {
        auth: { username: options.auth.username, password: Redacted.value(options.auth.password) }
      })
    }
    const client = yield* Effect.acquireRelease(
      Effect.try({
        try: () => new Etcd3(clientOptions),
        catch: (cause) => failures.error("open", undefined, `cannot create the etcd client: ${(cause as Error).message}`, cause)
      }),
      (client) => Effect.sync(() => client.close())
    )

    // ---------------------------------------------------------------------------------------------
    // Requests and their failures.

    const classify = (operation: string, key: string | undefined, raw: unknown, lease?: Lease): Failed => {
      // Errors from streams arrive as plain gRPC errors; unary calls' are already typed by etcd3.
      const cause = raw instanceof Error && "code" in raw ? castGrpcError(raw) : raw
      const text = cause instanceof Error ? cause.message : String(cause)
      if (cause instanceof EtcdLeaseInvalidError) {
        // A batched write does not know its lease here; commit() names it.
        return new Failed(new LeaseExpired({ lease: lease?.id ?? "unknown", operation }), false, false)
      }
      if (cause instanceof GRPCUnavailableError || cause instanceof GRPCDeadlineExceededError) {
        const unsent = /No connection established|ECONNREFUSED|ECONNRESET before|Failed to connect/i.test(text)
        return new Failed(
          failures.error(
            operation,
            key,
            `etcd is unreachable or did not answer within ${timeoutMs} ms (${text}); ` +
              `check that etcd runs at ${hosts.join(", ")}`,
            cause
          ),
          true,
          unsent
        )
      }
      if (
        cause instanceof EtcdAuthenticationFailedError || cause instanceof GRPCUnauthenticatedError ||
        cause instanceof EtcdPermissionDeniedError
      ) {
        return new Failed(
          failures.error(operation, key, `etcd refused the credentials or the permission (${text})`, cause),
          false,
          false
        )
      }
      if (cause instanceof GRPCResourceExhastedError || /request is too large/.test(text)) {
        return new Failed(
          failures.error(
            operation,
            key,
            `etcd refused the request as too large (${text}); set maxRequestBytes to the server's --max-request-bytes`,
            cause
          ),
          false,
          false
        )
      }
      return new Failed(failures.error(operation, key, text, cause), false, false)
    }

    /** One etcd request. Reads are retried on transient failures; writes only when they never left. */
    const requestRaw = <A>(
      operation: string,
      key: string | undefined,
      kind: "read" | "write",
      run: () => Promise<A>,
      lease?: Lease
    ): Effect.Effect<A, Failed> =>
      Effect.tryPromise({ try: run, catch: (cause) => classify(operation, key, cause, lease) }).pipe(
        Effect.retry({
          schedule: readRetry,
          while: (failed) => kind === "read" ? failed.transient : failed.unsent
        }),
        onLiveClock
      )
    const request = <A>(
      operation: string,
      key: string | undefined,
      kind: "read" | "write",
      run: () => Promise<A>,
      lease?: Lease
    ): Effect.Effect<A, StoreError | LeaseExpired> =>
      Effect.mapError(requestRaw(operation, key, kind, run, lease), (failed) => failed.error)
    // For operations that bind no lease, LeaseExpired cannot happen.
    const plain = <A>(effect: Effect.Effect<A, StoreError | LeaseExpired>) => effect as Effect.Effect<A, StoreError>

    // ---------------------------------------------------------------------------------------------
    // Keys and values.

    const root = Buffer.from(prefix, "utf8")
    const physical = (key: string) => Buffer.concat([root, Buffer.from(key, "utf8")])
    const logical = (key: Buffer) => key.subarray(root.length).toString("utf8")
    const chunkBase = (key: string) => Buffer.concat([root, Buffer.from(`\u0000c/${key}\u0000`, "utf8")])
    const chunkKey = (key: string, upload: string, index: number) =>
      Buffer.concat([chunkBase(key), Buffer.from(`${upload}/${String(index).padStart(6, "0")}`, "utf8")])
    /** Deletes every chunk of `key` except those of `keep` (the upload a put is committing). */
    const dropChunks = (key: string, keep?: string): Array<IRequestOp> => {
      const base = chunkBase(key)
      if (keep === undefined) return [{ request_delete_range: { key: base, range_end: prefixEnd(base) } }]
      return [
        { request_delete_range: { key: base, range_end: Buffer.concat([base, Buffer.from(`${keep}/`)]) } },
        { request_delete_range: { key: Buffer.concat([base, Buffer.from(`${keep}0`)]), range_end: prefixEnd(base) } }
      ]
    }
    /** The user keys under `userPrefix`; for "" it skips P\0..., where the chunks live. */
    const userRange = (userPrefix: string) =>
      userPrefix === ""
        ? { key: Buffer.concat([root, Buffer.from([1])]), range_end: prefixEnd(root) }
        : { key: physical(userPrefix), range_end: prefixEnd(physical(userPrefix)) }

    const isManifest = (value: Buffer | Uint8Array) =>
      value.length >= MAGIC.length && Buffer.from(value.buffer, value.byteOffset, MAGIC.length).equals(MAGIC)

    const parseManifest = (key: string, value: Buffer): Effect.Effect<Manifest, StoreError> =>
      Effect.try({
        try: () => {
          const parsed = JSON.parse(value.subarray(MAGIC.length).toString("utf8")) as Manifest
          if (typeof parsed.upload !== "string" || !Number.isSafeInteger(parsed.chunks) || !Number.isSafeInteger(parsed.size)) {
            throw new Error("missing fields")
          }
          return parsed
        },
        catch: (cause) =>
          failures.error("get", key, `the chunk manifest stored at the key is unreadable (${(cause as Error).message})`)
      })

    /** The value of a stored kv, reading its chunks (as of `revision`) when it is a manifest. */
    const valueOf = (key: string, kv: IKeyValue, revision: number): Effect.Effect<Uint8Array, StoreError> => {
      if (!isManifest(kv.value)) return Effect.succeed(new Uint8Array(kv.value))
      return Effect.gen(function*() {
        const manifest = yield* parseManifest(key, kv.value)
        const start = chunkKey(key, manifest.upload, 0)
        const end = Buffer.concat([chunkBase(key), Buffer.from(`${manifest.upload}0`)])
        const value = new Uint8Array(manifest.size)
        let offset = 0
        let from = start
        let count = 0
        // A few chunks per request keeps each reply a few MiB.
        while (true) {
          const page = yield* plain(request("get", key, "read", () =>
            client.kv.range({ key: from, range_end: end, revision, limit: 4 })))
          for (const chunk of page.kvs) {
            if (offset + chunk.value.length > manifest.size) break
            value.set(chunk.value, offset)
            offset += chunk.value.length
            count += 1
          }
          if (!page.more || page.kvs.length === 0) break
          from = Buffer.concat([page.kvs[page.kvs.length - 1]!.key, Buffer.from([0])])
        }
        if (count !== manifest.chunks || offset !== manifest.size) {
          return yield* failures.error(
            "get",
            key,
            `the value is stored in ${manifest.chunks} chunks but ${count} (${offset} of ${manifest.size} bytes) ` +
              `were found at revision ${revision}; the history may have been compacted meanwhile, read again`
          )
        }
        return value
      })
    }

    const toEntry = (kv: IKeyValue, revision: number): Effect.Effect<Entry, StoreError> => {
      const key = logical(kv.key)
      return Effect.map(valueOf(key, kv, revision), (value) => ({
        key,
        value,
        version: num(kv.version),
        revision: num(kv.mod_revision),
        lease: kv.lease === "0" || kv.lease === undefined ? undefined : String(kv.lease)
      }))
    }

    interface Stored {
      readonly value: Buffer
      readonly upload: string | undefined
    }

    /**
     * Makes a value fit in a transaction: small values go inline, large ones
     * (or those that look like a manifest) are uploaded as chunks first and
     * replaced by a manifest. The chunks are invisible until the transaction
     * that writes the manifest commits, which is what makes the write atomic.
     */
    const store = (operation: string, key: string, value: Uint8Array, lease: Lease | undefined, chunk: boolean) =>
      Effect.gen(function*() {
        if (!chunk && !isManifest(value)) return { value: Buffer.from(value), upload: undefined } satisfies Stored
        const upload = randomBytes(8).toString("hex")
        const chunks = Math.max(1, Math.ceil(value.byteLength / chunkSize))
        yield* Effect.forEach(
          Array.from({ length: chunks }, (_, i) => i),
          (index) =>
            request(operation, key, "write", () =>
              client.kv.put({
                key: chunkKey(key, upload, index),
                value: Buffer.from(value.buffer, value.byteOffset + index * chunkSize, Math.min(chunkSize, value.byteLength - index * chunkSize)),
                ...(lease === undefined ? {} : { lease: lease.id })
              }), lease),
          { concurrency: 2, discard: true }
        ).pipe(
          // Unreferenced chunks are harmless, but there is no reason to leave them behind.
          Effect.tapError(() => Effect.ignore(dropUpload(key, upload)))
        )
        const manifest: Manifest = { upload, chunks, size: value.byteLength }
        return { value: Buffer.concat([MAGIC, Buffer.from(JSON.stringify(manifest), "utf8")]), upload } satisfies Stored
      })

    const dropUpload = (key: string, upload: string) =>
      request("put", key, "write", () =>
        client.kv.deleteRange({
          key: chunkKey(key, upload, 0),
          range_end: Buffer.concat([chunkBase(key), Buffer.from(`${upload}0`)])
        }))

    // ---------------------------------------------------------------------------------------------
    // Group commit. A Node client spends far more CPU per request than etcd does per operation, so
    // concurrent requests are sent together: writes as one transaction of nested transactions (each
    // with its own guards and outcome), reads as one transaction of ranges. etcd evaluates all the
    // guards of a transaction before applying any of its writes, so operations batched together must
    // touch disjoint keys; an operation on a key already in the batch waits for the next one. A batch
    // commits at one revision, as if its operations were one transaction.

    interface Outcome {
      readonly succeeded: boolean
      readonly responses: ReadonlyArray<IResponseOp>
      readonly revision: number
    }

    interface BatchItem<I> {
      readonly item: I
      readonly keys: ReadonlyArray<string>
      readonly bytes: number
      readonly done: Deferred.Deferred<Outcome, StoreError | LeaseExpired>
    }

    const MAX_BATCH = 64
    const IN_FLIGHT = 4

    const makeBatcher = <I>(
      sendOne: (item: I) => Effect.Effect<Outcome, Failed>,
      sendMany: (items: ReadonlyArray<I>) => Effect.Effect<ReadonlyArray<Outcome>, Failed>
    ) =>
      Effect.gen(function*() {
        const incoming = yield* Queue.unbounded<BatchItem<I>>()
        const permits = yield* Semaphore.make(IN_FLIGHT)
        const backlog: Array<BatchItem<I>> = []
        const pick = (): Array<BatchItem<I>> => {
          const batch: Array<BatchItem<I>> = []
          const keys = new Set<string>()
          let bytes = 0
          for (let i = 0; i < backlog.length && batch.length < MAX_BATCH; i++) {
            const candidate = backlog[i]!
            if (candidate.keys.some((key) => keys.has(key))) continue
            if (batch.length > 0 && bytes + candidate.bytes > chunkSize) continue
            batch.push(candidate)
            for (const key of candidate.keys) keys.add(key)
            bytes += candidate.bytes
            backlog.splice(i, 1)
            i--
          }
          return batch
        }
        const settle = (batch: ReadonlyArray<BatchItem<I>>, exits: ReadonlyArray<Exit.Exit<Outcome, StoreError | LeaseExpired>>) =>
          Effect.sync(() => batch.forEach((entry, i) => Deferred.doneUnsafe(entry.done, exits[i]!)))
        const send = (batch: ReadonlyArray<BatchItem<I>>) =>
          Effect.gen(function*() {
            if (batch.length === 1) {
              return yield* settle(batch, [yield* Effect.exit(Effect.mapError(sendOne(batch[0]!.item), (f) => f.error))])
            }
            const together = yield* Effect.exit(sendMany(batch.map((entry) => entry.item)))
            if (Exit.isSuccess(together)) return yield* settle(batch, together.value.map(Exit.succeed))
            const failed = Exit.findErrorOption(together)
            if (Option.isSome(failed) && failed.value.transient) {
              return yield* settle(batch, batch.map(() => Exit.fail(failed.value.error)))
            }
            // One operation spoiled the batch (a lapsed lease, say): send each alone to give each its own outcome.
            const alone = yield* Effect.forEach(batch, (entry) => Effect.exit(Effect.mapError(sendOne(entry.item), (f) => f.error)), {
              concurrency: "unbounded"
            })
            yield* settle(batch, alone)
          })
        yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
          backlog.push(...(backlog.length === 0 ? yield* Queue.takeAll(incoming) : yield* Queue.clear(incoming)))
          yield* Semaphore.take(permits, 1)
          // Items that arrived while we waited for a permit join this batch.
          backlog.push(...(yield* Queue.clear(incoming)))
          const batch = pick()
          yield* Effect.forkScoped(send(batch).pipe(
            // Interrupted only when the store closes: its callers must not wait for a reply that will never come.
            Effect.onInterrupt(() => settle(batch, batch.map(() => Exit.fail(failures.error("write", undefined, "the store was closed"))))),
            Effect.ensuring(Semaphore.release(permits, 1))
          ))
        })))
        // Whatever is queued when the store closes fails at once instead of waiting for a writer that is gone.
        let closed = false
        yield* Effect.addFinalizer(() =>
          Effect.gen(function*() {
            closed = true
            const left = [...backlog.splice(0), ...(yield* Queue.clear(incoming))]
            for (const entry of left) Deferred.doneUnsafe(entry.done, Exit.fail(failures.error("write", undefined, "the store was closed")))
          })
        )
        return (item: I, keys: ReadonlyArray<string>, bytes: number) =>
          Effect.gen(function*() {
            if (closed) return yield* failures.error("write", undefined, "the store was closed")
            const done = yield* Deferred.make<Outcome, StoreError | LeaseExpired>()
            yield* Queue.offer(incoming, { item, keys, bytes, done })
            return yield* Deferred.await(done)
          })
      })

    const writes = yield* makeBatcher<ITxnRequest>(
      (txn) =>
        Effect.map(requestRaw("write", undefined, "write", () => client.kv.txn(txn)), (response) => ({
          succeeded: response.succeeded,
          responses: response.responses,
          revision: num(response.header.revision)
        })),
      (txns) =>
        Effect.map(
          requestRaw("write", undefined, "write", () =>
            client.kv.txn({ compare: [], success: txns.map((txn) => ({ request_txn: txn })), failure: [] })),
          (response) =>
            response.responses.map((nested) => ({
              succeeded: nested.response_txn.succeeded,
              responses: nested.response_txn.responses,
              revision: num(response.header.revision)
            }))
        )
    )

    const reads = yield* makeBatcher<Buffer>(
      (key) =>
        Effect.map(requestRaw("get", undefined, "read", () => client.kv.range({ key })), (response) => ({
          succeeded: true,
          responses: [{ response_range: response } as IResponseOp],
          revision: num(response.header.revision)
        })),
      (keys) =>
        Effect.map(
          requestRaw("get", undefined, "read", () =>
            client.kv.txn({ compare: [], success: keys.map((key) => ({ request_range: { key } })), failure: [] })),
          (response) =>
            response.responses.map((one) => ({
              succeeded: true,
              responses: [one],
              revision: num(response.header.revision)
            }))
        )
    )

    // ---------------------------------------------------------------------------------------------
    // The one write path: a transaction of guarded puts and deletes.

    const commit = (operation: string, ops: ReadonlyArray<TxnOp>): Effect.Effect<TxnResult, StoreError | VersionConflict | LeaseExpired> =>
      Effect.gen(function*() {
        const puts = ops.filter((op): op is Extract<TxnOp, { _tag: "Put" }> => op._tag === "Put")
        // Inline what fits in one request; upload the largest values as chunks until the rest does.
        const chunked = new Set<TxnOp>(puts.filter((op) => op.value.byteLength > chunkSize))
        let inline = puts.filter((op) => !chunked.has(op)).reduce((sum, op) => sum + op.value.byteLength + op.key.length, 0)
        for (const op of [...puts].sort((a, b) => b.value.byteLength - a.value.byteLength)) {
          if (inline <= chunkSize) break
          if (chunked.has(op)) continue
          chunked.add(op)
          inline -= op.value.byteLength + op.key.length
        }
        const stored = new Map<TxnOp, Stored>()
        for (const op of puts) stored.set(op, yield* store(operation, op.key, op.value, op.lease, chunked.has(op)))

        const guards = ops.filter((op) => op.expectedVersion !== undefined)
        const success: Array<IRequestOp> = []
        const deleteIndex = new Map<TxnOp, number>()
        for (const op of ops) {
          if (op._tag === "Put") {
            const { upload, value } = stored.get(op)!
            success.push({
              request_put: { key: physical(op.key), value, ...(op.lease === undefined ? {} : { lease: op.lease.id }) }
            })
            success.push(...dropChunks(op.key, upload))
          } else if (op._tag === "Delete") {
            deleteIndex.set(op, success.length)
            success.push({ request_delete_range: { key: physical(op.key) } })
            success.push(...dropChunks(op.key))
          }
        }
        // Reads after the writes see them: they give the new versions.
        const readIndex = success.length
        for (const op of puts) success.push({ request_range: { key: physical(op.key), keys_only: true } })
        const leases = puts.flatMap((op) => (op.lease === undefined ? [] : [op.lease]))
        const bytes = [...stored.values()].reduce((sum, s) => sum + s.value.length, 0) +
          ops.reduce((sum, op) => sum + 2 * op.key.length + 64, 0)

        const response = yield* writes(
          {
            compare: guards.map((op) => ({
              key: physical(op.key),
              target: "Version" as const,
              result: "Equal" as const,
              version: op.expectedVersion!
            })),
            success,
            failure: guards.map((op) => ({ request_range: { key: physical(op.key), keys_only: true } }))
          },
          ops.map((op) => op.key),
          bytes
        ).pipe(
          Effect.mapError((error) =>
            error._tag === "StoreError"
              ? failures.error(operation, ops.length === 1 ? ops[0]!.key : undefined, error.message.replace(/^.*? failed: /, ""), error.cause)
              : // etcd does not say which lease is missing: report the transaction's first.
                new LeaseExpired({ lease: leases[0]?.id ?? "unknown", operation })
          )
        )
        if (!response.succeeded) {
          // Nothing was written: drop what we uploaded.
          for (const [op, { upload }] of stored) if (upload !== undefined) yield* Effect.ignore(dropUpload(op.key, upload))
          for (const [index, op] of guards.entries()) {
            const actual = num(rangeOf(response.responses[index])?.kvs[0]?.version)
            if (actual !== op.expectedVersion) {
              return yield* new VersionConflict({ key: op.key, expected: op.expectedVersion!, actual })
            }
          }
          return yield* failures.error(operation, undefined, "etcd rejected the transaction's guards but every key is at its expected version; retry")
        }
        const revision = response.revision
        const entries = puts.map((op, i): Entry => {
          const kv = rangeOf(response.responses[readIndex + i])?.kvs[0]
          return {
            key: op.key,
            value: new Uint8Array(op.value),
            version: num(kv?.version),
            revision,
            lease: op.lease?.id
          }
        })
        const deleted = ops.filter((op) => op._tag === "Delete" && num(response.responses[deleteIndex.get(op)!]?.response_delete_range?.deleted) > 0)
          .map((op) => op.key)
        return { revision, entries, deleted }
      })

    const rangeOf = (response: IResponseOp | undefined) => response?.response_range

    // ---------------------------------------------------------------------------------------------
    // The service.

    const get = Effect.fn("StateStore.get")(function*(key: string) {
      yield* failures.checkKey("get", key)
      const response = yield* plain(reads(physical(key), [], 0)).pipe(
        Effect.mapError((error) => failures.error("get", key, error.message.replace(/^.*? failed: /, ""), error.cause))
      )
      const kv = rangeOf(response.responses[0])?.kvs[0]
      if (kv === undefined) return Option.none()
      return Option.some(yield* toEntry(kv, response.revision))
    })

    const getMany = Effect.fn("StateStore.getMany")(function*(keys: ReadonlyArray<string>) {
      yield* failures.checkKeys("getMany", keys)
      if (keys.length === 0) return []
      // A read-only transaction: every key at the same revision, in one round trip.
      const response = yield* plain(request("getMany", undefined, "read", () =>
        client.kv.txn({ compare: [], success: keys.map((key) => ({ request_range: { key: physical(key) } })), failure: [] })))
      const revision = num(response.header.revision)
      return yield* Effect.forEach(keys, (_, i) => {
        const kv = rangeOf(response.responses[i])?.kvs[0]
        return kv === undefined ? Effect.succeed(Option.none<Entry>()) : Effect.map(toEntry(kv, revision), Option.some)
      })
    })

    const list = Effect.fn("StateStore.list")(function*(userPrefix: string, listOptions?: ListOptions) {
      yield* failures.checkList(userPrefix, listOptions)
      const range = userRange(userPrefix)
      const after = listOptions?.after
      // `after` is exclusive: the smallest key above it is after + "\0".
      const start = after !== undefined && compareKeys(after, userPrefix) >= 0
        ? Buffer.concat([physical(after), Buffer.from([0])])
        : range.key
      if (Buffer.compare(start, range.key) < 0) return []
      const response = yield* plain(request("list", undefined, "read", () =>
        client.kv.range({ key: start, range_end: range.range_end, limit: listOptions?.limit ?? 0 })))
      const revision = num(response.header.revision)
      return yield* Effect.forEach(response.kvs, (kv) => toEntry(kv, revision))
    })

    const put = Effect.fn("StateStore.put")(function*(key: string, value: Uint8Array, putOptions?: PutOptions) {
      yield* failures.checkKey("put", key)
      yield* failures.checkValue("put", key, value)
      yield* failures.checkLease("put", key, putOptions?.lease)
      const result = yield* commit("put", [{ _tag: "Put", key, value, lease: putOptions?.lease }]).pipe(
        Effect.catchTag("VersionConflict", (e) => Effect.die(e))
      )
      return result.entries[0]!
    })

    const compareAndSet = Effect.fn("StateStore.compareAndSet")(
      function*(key: string, expectedVersion: number, value: Uint8Array, putOptions?: PutOptions) {
        yield* failures.checkKey("compareAndSet", key)
        yield* failures.checkVersion("compareAndSet", key, expectedVersion)
        yield* failures.checkValue("compareAndSet", key, value)
        yield* failures.checkLease("compareAndSet", key, putOptions?.lease)
        const result = yield* commit("compareAndSet", [{ _tag: "Put", key, value, expectedVersion, lease: putOptions?.lease }])
        return result.entries[0]!
      }
    )

    const delete_ = Effect.fn("StateStore.delete")(function*(key: string, deleteOptions?: DeleteOptions) {
      yield* failures.checkKey("delete", key)
      const expected = deleteOptions?.expectedVersion
      if (expected !== undefined) yield* failures.checkVersion("delete", key, expected)
      const result = yield* commit("delete", [{ _tag: "Delete", key, expectedVersion: expected }]).pipe(
        Effect.catchTag("LeaseExpired", (e) => Effect.die(e))
      )
      return result.deleted.length > 0
    })

    const transaction = Effect.fn("StateStore.transaction")(function*(ops: ReadonlyArray<TxnOp>) {
      yield* failures.checkTxn(ops)
      if (!ops.some((op) => op._tag !== "Check")) {
        // Guards only: read the versions at one revision, write nothing.
        const response = yield* plain(request("transaction", undefined, "read", () =>
          client.kv.txn({
            compare: [],
            success: ops.map((op) => ({ request_range: { key: physical(op.key), keys_only: true } })),
            failure: []
          })))
        for (const [index, op] of ops.entries()) {
          const actual = num(rangeOf(response.responses[index])?.kvs[0]?.version)
          if (actual !== op.expectedVersion) {
            return yield* new VersionConflict({ key: op.key, expected: op.expectedVersion!, actual })
          }
        }
        return { revision: num(response.header.revision), entries: [], deleted: [] }
      }
      return yield* commit("transaction", ops)
    })

    const revision = plain(request("revision", undefined, "read", () =>
      client.kv.range({ key: Buffer.concat([root, Buffer.from("\u0000revision")]), keys_only: true })
    )).pipe(Effect.map((response) => num(response.header.revision)), Effect.withSpan("StateStore.revision"))

    const grantLease = Effect.fn("StateStore.grantLease")(function*(ttl: Duration.Input) {
      const ttlMillis = yield* failures.checkTtl(ttl)
      const response = yield* plain(request("grantLease", undefined, "write", () =>
        client.leaseClient.leaseGrant({ TTL: Math.max(1, Math.ceil(ttlMillis / 1000)) })))
      if (response.error !== undefined && response.error !== "") {
        return yield* failures.error("grantLease", undefined, `etcd refused the lease: ${response.error}`)
      }
      return { id: String(response.ID), ttlMillis: num(response.TTL) * 1000 } satisfies Lease
    })

    const keepAlive = Effect.fn("StateStore.keepAlive")(function*(lease: Lease) {
      yield* failures.checkLease("keepAlive", undefined, lease)
      // Keep-alives travel on a stream; one short-lived stream per refresh is plenty at TTL/3 intervals.
      const ttl = yield* request("keepAlive", undefined, "write", () =>
        client.leaseClient.leaseKeepAlive().then((stream) =>
          new Promise<number>((resolve, reject) => {
            const timer = setTimeout(() => {
              stream.cancel()
              reject(new GRPCDeadlineExceededError(`no keep-alive reply within ${timeoutMs} ms`))
            }, timeoutMs)
            stream.on("data", (reply: { TTL: string }) => {
              clearTimeout(timer)
              stream.end()
              resolve(num(reply.TTL))
            })
            stream.on("error", (error: Error) => {
              clearTimeout(timer)
              reject(error)
            })
            stream.write({ ID: lease.id })
          })
        ), lease)
      if (ttl <= 0) return yield* new LeaseExpired({ lease: lease.id, operation: "keepAlive" })
    })

    const revokeLease = Effect.fn("StateStore.revokeLease")(function*(lease: Lease) {
      yield* failures.checkLease("revokeLease", undefined, lease)
      yield* request("revokeLease", undefined, "write", () => client.leaseClient.leaseRevoke({ ID: lease.id }), lease).pipe(
        // Revoking what has already ended is what the caller wanted anyway.
        Effect.catchTag("LeaseExpired", () => Effect.void)
      )
    })

    const watch = (userPrefix: string, watchOptions?: WatchOptions): Stream.Stream<WatchEvent, StoreError | RevisionCompacted> =>
      Stream.callback<WatchEvent, StoreError | RevisionCompacted>((queue) =>
        Effect.gen(function*() {
          yield* failures.checkPrefix("watch", userPrefix)
          yield* failures.checkRevision(watchOptions?.fromRevision)
          const range = userRange(userPrefix)
          // The next revision to deliver; a reconnect resumes from it, so nothing is lost or repeated.
          let next = watchOptions?.fromRevision ?? (yield* revision) + 1

          const session = Effect.gen(function*() {
            const responses = yield* Queue.unbounded<IWatchResponse, StoreError>()
            const stream = yield* Effect.acquireRelease(
              plain(request("watch", undefined, "read", () => client.watchClient.watch())),
              (stream) => Effect.sync(() => stream.cancel())
            )
            stream.on("data", (response: IWatchResponse) => Queue.offerUnsafe(responses, response))
            stream.on("error", (error: Error) => Queue.failCauseUnsafe(responses, causeOf(classify("watch", undefined, error).error as StoreError)))
            stream.on("end", () =>
              Queue.failCauseUnsafe(responses, causeOf(failures.error("watch", undefined, "etcd closed the watch stream"))))
            stream.write({
              create_request: { key: range.key, range_end: range.range_end, start_revision: next, progress_notify: false }
            })
            while (true) {
              const response = yield* Queue.take(responses)
              if (response.canceled) {
                if (num(response.compact_revision) > 0) {
                  return yield* new RevisionCompacted({ requested: next, compactRevision: num(response.compact_revision) - 1 })
                }
                return yield* failures.error("watch", undefined, `etcd cancelled the watch: ${response.cancel_reason || "no reason given"}`)
              }
              const events: Array<WatchEvent> = []
              for (const event of response.events ?? []) {
                const key = logical(event.kv.key)
                const at = num(event.kv.mod_revision)
                if (event.type === "Delete") events.push({ _tag: "Delete", key, revision: at })
                else events.push({ _tag: "Put", entry: yield* toEntry(event.kv, at) })
              }
              if (events.length > 0) {
                yield* Queue.offerAll(queue, events)
                const last = events[events.length - 1]!
                next = (last._tag === "Put" ? last.entry.revision : last.revision) + 1
              }
            }
          }).pipe(Effect.scoped)

          return yield* session.pipe(
            Effect.retry({ schedule: watchRetry, while: (error) => error._tag === "StoreError" && isTransient(error) }),
            onLiveClock
          )
        }), { bufferSize: 1024, strategy: "suspend" })

    return {
      get,
      getMany,
      list,
      put,
      compareAndSet,
      delete: delete_,
      transaction,
      watch,
      revision,
      grantLease,
      keepAlive,
      revokeLease
    }
  })

const causeOf = (error: StoreError) => Cause.fail(error)
const isTransient = (error: StoreError) => /unreachable|closed the watch stream/.test(error.message)
