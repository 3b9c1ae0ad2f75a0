import { createHash, randomUUID } from "node:crypto"
import { constants, createReadStream } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Clock, Duration, Effect } from "effect"
import type { v1 } from "@berth/proto"
import type { FetcherOptions } from "../CommandExecutor.ts"
import { FetchError } from "../ExecutorError.ts"
import { archiveKind, extract, makeDirectories, pathProblem } from "./archive.ts"

const GiB = 1024 ** 3

/** `FetcherOptions` with every default filled in. */
export interface FetcherConfig {
  readonly cacheDir: string | undefined
  readonly cacheSizeBytes: number
  readonly timeout: Duration.Duration
  readonly stallTimeout: Duration.Duration
  readonly maxBytes: number
  readonly maxExtractedBytes: number
}

export const resolveConfig = (options: FetcherOptions | undefined): FetcherConfig => ({
  cacheDir: options?.cacheDir,
  // Mesos: --fetcher_cache_size defaults to 2 GB, --fetcher_stall_timeout to 1 minute
  // (src/slave/constants.hpp, DEFAULT_FETCHER_CACHE_SIZE and DEFAULT_FETCHER_STALL_TIMEOUT).
  cacheSizeBytes: options?.cacheSizeBytes ?? 2 * GiB,
  stallTimeout: Duration.fromInputUnsafe(options?.stallTimeout ?? "1 minute"),
  timeout: Duration.fromInputUnsafe(options?.timeout ?? "10 minutes"),
  maxBytes: options?.maxBytes ?? 2 * GiB,
  maxExtractedBytes: options?.maxExtractedBytes ?? 8 * GiB
})

const errorMessage = (error: unknown): string => {
  if (!(error instanceof Error)) return String(error)
  // Node's fetch says only "fetch failed"; the reason (ECONNREFUSED, ENOTFOUND, ...) is the cause.
  const cause = (error as { cause?: unknown }).cause
  return cause instanceof Error ? `${error.message}: ${cause.message}` : error.message
}

const io = <A>(evaluate: () => Promise<A>): Effect.Effect<A, string> =>
  Effect.tryPromise({ try: evaluate, catch: errorMessage })

const CHECKSUM = /^sha256:[0-9a-fA-F]{64}$/

/** The file name the artifact gets in the sandbox: `output_file`, else the URI's last segment. */
const outputName = (uri: v1.CommandUri, url: URL): string => {
  if (uri.outputFile !== "") return path.posix.normalize(uri.outputFile)
  const last = url.pathname.slice(url.pathname.lastIndexOf("/") + 1)
  try {
    return decodeURIComponent(last)
  } catch {
    return last
  }
}

/** Why `uri` (the task's `command.uris[index]`) cannot be fetched, naming the field and the rule. */
export const uriProblem = (uri: v1.CommandUri, index: number): string | undefined => {
  const field = `command.uris[${index}]`
  let url: URL
  try {
    url = new URL(uri.value)
  } catch {
    return `${field}.value: '${uri.value}' is not an absolute URI`
  }
  if (url.protocol !== "file:" && url.protocol !== "http:" && url.protocol !== "https:") {
    return `${field}.value: the scheme must be file, http or https, not '${url.protocol.slice(0, -1)}'`
  }
  if (url.protocol === "file:" && url.host !== "" && url.host !== "localhost") {
    return `${field}.value: a file URI must name a path on the agent (file:///path), not the host '${url.host}'`
  }
  if (uri.checksum !== "" && !CHECKSUM.test(uri.checksum)) {
    return `${field}.checksum: must be "sha256:" followed by 64 hexadecimal digits`
  }
  const name = outputName(uri, url)
  if (uri.outputFile === "") {
    if (name === "" || name === "." || name === ".." || name.includes("/")) {
      return `${field}.output_file: required, because the URI does not end in a usable file name`
    }
    return undefined
  }
  const issue = pathProblem(uri.outputFile)
  if (issue !== undefined) return `${field}.output_file: must stay inside the sandbox, but it ${issue}`
  if (name === "." || name.endsWith("/")) return `${field}.output_file: must name a file`
  return undefined
}

interface Downloaded {
  /** A temporary file next to where the artifact goes; the caller renames it. */
  readonly file: string
  readonly bytes: number
}

/** A readable source of bytes and how to abandon it. */
interface Source {
  readonly chunks: AsyncIterator<Uint8Array>
  readonly size: number | undefined
  readonly close: () => void
}

const openFile = (url: URL): Effect.Effect<Source, string> =>
  Effect.gen(function*() {
    const file = fileURLToPath(url)
    const stat = yield* io(() => fs.stat(file))
    if (!stat.isFile()) return yield* Effect.fail(`${file} is not a regular file`)
    const stream = createReadStream(file)
    return { chunks: stream[Symbol.asyncIterator](), size: stat.size, close: () => stream.destroy() }
  })

const openHttp = (url: URL, signal: AbortSignal): Effect.Effect<Source, string> =>
  Effect.gen(function*() {
    const response = yield* io(() => fetch(url, { signal, redirect: "follow", headers: { "user-agent": "berth-fetcher" } }))
    if (!response.ok) {
      yield* Effect.sync(() => void response.body?.cancel().catch(() => undefined))
      return yield* Effect.fail(`HTTP ${response.status} ${response.statusText}`.trimEnd())
    }
    const length = response.headers.get("content-length")
    const body = response.body
    const empty: AsyncIterator<Uint8Array> = { next: async () => ({ done: true, value: undefined }) }
    return {
      chunks: body === null ? empty : body[Symbol.asyncIterator](),
      size: length === null ? undefined : Number(length),
      close: () => void body?.cancel().catch(() => undefined)
    }
  })

/**
 * Copies the artifact at `url` into a new temporary file in `dir`, hashing it on the way, within
 * the size cap, the stall timeout (no bytes for that long) and the overall timeout. The temporary
 * file is removed unless the copy succeeds and matches `checksum`.
 */
const download = (
  url: URL,
  dir: string,
  checksum: string,
  config: FetcherConfig
): Effect.Effect<Downloaded, string> => {
  const file = path.join(dir, `.berth-fetch-${randomUUID()}`)
  const transfer = Effect.acquireUseRelease(
    Effect.sync(() => ({ controller: new AbortController(), closers: [] as Array<() => void> })),
    ({ closers, controller }) =>
      Effect.gen(function*() {
        const source = yield* (url.protocol === "file:" ? openFile(url) : openHttp(url, controller.signal))
        closers.push(source.close)
        if (source.size !== undefined && source.size > config.maxBytes) {
          return yield* Effect.fail(`the artifact has ${source.size} bytes, more than the limit of ${config.maxBytes}`)
        }
        const handle = yield* io(() => fs.open(file, "wx", 0o644))
        closers.push(() => void handle.close().catch(() => undefined))
        const hash = createHash("sha256")
        let bytes = 0
        while (true) {
          const next = yield* io(() => source.chunks.next()).pipe(
            Effect.timeoutOrElse({
              duration: config.stallTimeout,
              orElse: () => Effect.fail(`the download stalled: no data for ${Duration.format(config.stallTimeout)}`)
            })
          )
          if (next.done === true) break
          const chunk = next.value
          bytes += chunk.length
          if (bytes > config.maxBytes) {
            return yield* Effect.fail(`the artifact is larger than the limit of ${config.maxBytes} bytes`)
          }
          hash.update(chunk)
          yield* io(() => handle.write(chunk))
        }
        yield* io(() => handle.close())
        if (checksum !== "") {
          const actual = `sha256:${hash.digest("hex")}`
          if (actual !== checksum.toLowerCase()) {
            return yield* Effect.fail(`checksum mismatch: expected ${checksum.toLowerCase()}, got ${actual}`)
          }
        }
        return { file, bytes }
      }),
    ({ closers, controller }) =>
      Effect.sync(() => {
        controller.abort()
        for (const close of closers) close()
      })
  )
  return transfer.pipe(
    Effect.timeoutOrElse({
      duration: config.timeout,
      orElse: () => Effect.fail(`timed out after ${Duration.format(config.timeout)}`)
    }),
    Effect.onExit((exit) => exit._tag === "Success" ? Effect.void : Effect.promise(() => fs.rm(file, { force: true })))
  )
}

/** Cache entries are named by the hash of URI and checksum, so a new checksum is a new entry. */
const cacheKey = (uri: v1.CommandUri): string =>
  createHash("sha256").update(`${uri.value}\n${uri.checksum.toLowerCase()}`).digest("hex")

/** Copies `from` to `to` by way of a temporary file, so that `to` is never written through a link. */
const place = (from: string, to: string): Effect.Effect<void, string> => {
  const temporary = path.join(path.dirname(to), `.berth-fetch-${randomUUID()}`)
  return io(async () => {
    try {
      await fs.copyFile(from, temporary, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE)
      await fs.rename(temporary, to)
    } finally {
      await fs.rm(temporary, { force: true })
    }
  })
}

/** Removes the least recently used entries until the cache holds at most `limit` bytes. */
const evict = (dir: string, limit: number, keep: string): Effect.Effect<void> =>
  io(async () => {
    const entries = []
    for (const name of await fs.readdir(dir)) {
      if (name.startsWith(".")) continue
      const stat = await fs.stat(path.join(dir, name)).catch(() => undefined)
      if (stat?.isFile() === true) entries.push({ name, size: stat.size, used: stat.mtimeMs })
    }
    let total = entries.reduce((sum, entry) => sum + entry.size, 0)
    for (const entry of entries.sort((a, b) => a.used - b.used)) {
      if (total <= limit) break
      if (entry.name === keep) continue
      await fs.rm(path.join(dir, entry.name), { force: true })
      total -= entry.size
    }
  }).pipe(Effect.catch((message) => Effect.logWarning(`fetcher cache eviction failed: ${message}`)))

/**
 * Puts the artifact of `uri` at `dest`, from the cache when it holds it (a hit also marks the
 * entry as recently used), else by downloading it into the cache first. Returns whether it was a
 * cache hit. An artifact larger than the whole cache is fetched straight into the sandbox.
 */
const fetchCached = (url: URL, uri: v1.CommandUri, dest: string, cacheDir: string, config: FetcherConfig) =>
  Effect.gen(function*() {
    const key = cacheKey(uri)
    const entry = path.join(cacheDir, key)
    const seconds = (yield* Clock.currentTimeMillis) / 1000
    const hit = yield* place(entry, dest).pipe(
      Effect.andThen(Effect.promise(() => fs.utimes(entry, seconds, seconds).catch(() => undefined))),
      Effect.as(true),
      // A miss, or an entry evicted under our feet: fetch it.
      Effect.catch(() => Effect.succeed(false))
    )
    if (hit) return true
    yield* io(() => fs.mkdir(cacheDir, { recursive: true }))
    const downloaded = yield* download(url, cacheDir, uri.checksum, config)
    if (downloaded.bytes > config.cacheSizeBytes) {
      yield* place(downloaded.file, dest).pipe(Effect.ensuring(Effect.promise(() => fs.rm(downloaded.file, { force: true }))))
      return false
    }
    yield* io(() => fs.rename(downloaded.file, entry))
    yield* place(entry, dest)
    yield* evict(cacheDir, config.cacheSizeBytes, key)
    return false
  })

const fetchOne = (sandbox: string, uri: v1.CommandUri, config: FetcherConfig): Effect.Effect<void, string> =>
  Effect.gen(function*() {
    const url = new URL(uri.value)
    const name = outputName(uri, url)
    yield* io(() => makeDirectories(sandbox, path.posix.dirname(name), name))
    const dest = path.join(sandbox, name)
    const started = yield* Clock.currentTimeMillis
    let cached = false
    if (uri.cache && config.cacheDir !== undefined) {
      cached = yield* fetchCached(url, uri, dest, config.cacheDir, config)
    } else {
      const downloaded = yield* download(url, path.dirname(dest), uri.checksum, config)
      yield* io(() => fs.rename(downloaded.file, dest))
    }
    // As in Mesos, an executable artifact is never extracted.
    const kind = archiveKind(name)
    if (uri.executable) {
      yield* io(() => fs.chmod(dest, 0o755))
    } else if (uri.extract && kind !== undefined) {
      yield* io(() => extract(kind, dest, path.dirname(dest), config.maxExtractedBytes))
    }
    const elapsed = (yield* Clock.currentTimeMillis) - started
    yield* Effect.logDebug(`fetched ${uri.value} to ${name}${cached ? " from the cache" : ""} in ${elapsed} ms`)
  })

/**
 * Fetches every URI into `sandbox`, in order, and stops at the first failure. URIs must have
 * passed `uriProblem`.
 */
export const fetchAll = (
  sandbox: string,
  uris: ReadonlyArray<v1.CommandUri>,
  config: FetcherConfig
): Effect.Effect<void, FetchError> =>
  Effect.forEach(
    uris,
    (uri) => fetchOne(sandbox, uri, config).pipe(Effect.mapError((message) => new FetchError({ uri: uri.value, message }))),
    { discard: true }
  )
