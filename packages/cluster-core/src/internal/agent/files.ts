import * as grpc from "@grpc/grpc-js"
import { v1 } from "@berth/proto"
import { Effect } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { InvalidArgument, NotFound } from "../../ClusterError.ts"
import * as Grpc from "../grpc.ts"

/** Sandbox paths look like `frameworks/<fid>/executors/<eid>/runs/<run|latest>[/...]`. */
const SANDBOX = /^frameworks\/[^/]+\/executors\/[^/]+\/runs\/[^/]+(\/.*)?$/
const MAX_READ = 4 * 1024 * 1024

/**
 * Resolves a client path to a real file inside a sandbox. Symlinks are resolved first, so a
 * link planted in a sandbox cannot lead outside the agent's frameworks directory.
 */
export const resolve = (workDir: string, requested: string): Effect.Effect<string, InvalidArgument | NotFound> =>
  Effect.gen(function*() {
    const normalized = path.posix.normalize(requested.replace(/^\/+/, ""))
    if (normalized.startsWith("..") || !SANDBOX.test(normalized)) {
      return yield* new InvalidArgument({
        field: "path",
        rule: "must be inside a sandbox: frameworks/<frameworkId>/executors/<executorId>/runs/<runId|latest>[/file]"
      })
    }
    const root = yield* Effect.promise(() => fs.realpath(path.join(workDir, "frameworks")).catch(() => ""))
    const real = yield* Effect.tryPromise({
      try: () => fs.realpath(path.join(workDir, normalized)),
      catch: () => new NotFound({ field: "path", rule: `no such file or directory: ${normalized}` })
    })
    if (root === "" || !(real === root || real.startsWith(root + path.sep))) {
      return yield* new InvalidArgument({ field: "path", rule: "resolves outside the sandboxes" })
    }
    return real
  })

export const listFiles = (workDir: string) => (request: v1.ListFilesRequest) =>
  Effect.gen(function*() {
    const real = yield* resolve(workDir, request.path)
    const stat = yield* Effect.promise(() => fs.stat(real))
    const describe = async (name: string, full: string): Promise<v1.ListFilesResponse_File> => {
      const s = await fs.stat(full)
      return { path: name, directory: s.isDirectory(), size: s.size, modifiedTimeMs: Math.floor(s.mtimeMs), mode: s.mode }
    }
    if (!stat.isDirectory()) return { files: [yield* Effect.promise(() => describe(request.path, real))] }
    const names = yield* Effect.promise(() => fs.readdir(real))
    const files = yield* Effect.promise(() =>
      Promise.all(names.sort().map((name) => describe(path.posix.join(request.path, name), path.join(real, name))))
    )
    return { files }
  })

/** How often a followed file is checked for appended bytes (and for its sandbox being gone). */
const FOLLOW_POLL_MS = 200
/** The most bytes one message of a followed file carries. */
const FOLLOW_CHUNK = 1024 * 1024

/**
 * Reads a byte range of a sandbox file: one chunk (up to 4 MB) or, with `follow`, everything from
 * `offset` on and then the bytes appended later (tail -f), until the client cancels, `length`
 * bytes were sent, or the file is gone (its sandbox was garbage-collected): the stream then ends.
 * A file that shrinks (truncated) is read again from its start.
 */
export const readFile = (workDir: string, run: (effect: Effect.Effect<void>) => void) =>
(call: grpc.ServerWritableStream<v1.ReadFileRequest, v1.ReadFileResponse>) => {
  const request = call.request
  let cancelled = false
  call.on("cancelled", () => (cancelled = true))
  call.on("close", () => (cancelled = true))
  const once = (real: string) =>
    Effect.acquireUseRelease(
      Effect.promise(() => fs.open(real, "r")),
      (handle) =>
        Effect.promise(async () => {
          const size = (await handle.stat()).size
          const offset = Math.min(request.offset, size)
          const length = Math.min(request.length === 0 ? size - offset : request.length, size - offset, MAX_READ)
          const buffer = Buffer.alloc(length)
          const { bytesRead } = await handle.read(buffer, 0, length, offset)
          call.write({ data: buffer.subarray(0, bytesRead), offset: offset + bytesRead })
          call.end()
        }),
      (handle) => Effect.promise(() => handle.close())
    )
  /** Waits until the client took what was written (grpc-js buffers without bound otherwise). */
  const drained = Effect.callback<void>((resume) => {
    const done = () => resume(Effect.void)
    call.once("drain", done)
    call.once("cancelled", done)
    return Effect.sync(() => {
      call.off("drain", done)
      call.off("cancelled", done)
    })
  })
  const follow = (real: string) =>
    Effect.gen(function*() {
      let position = request.offset
      let remaining = request.length === 0 ? Infinity : request.length
      while (!cancelled && remaining > 0) {
        // Re-opened every round: a sandbox removed (or a file replaced) is noticed at once.
        const chunk = yield* Effect.promise(async () => {
          let handle: fs.FileHandle
          try {
            handle = await fs.open(real, "r")
          } catch {
            return "gone" as const
          }
          try {
            const size = (await handle.stat()).size
            if (size < position) position = 0
            const length = Math.min(size - position, FOLLOW_CHUNK, remaining)
            if (length <= 0) return undefined
            const buffer = Buffer.alloc(length)
            const { bytesRead } = await handle.read(buffer, 0, length, position)
            return buffer.subarray(0, bytesRead)
          } finally {
            await handle.close()
          }
        })
        if (chunk === "gone") break
        if (chunk === undefined || chunk.length === 0) {
          yield* Effect.sleep(FOLLOW_POLL_MS)
          continue
        }
        position += chunk.length
        remaining -= chunk.length
        if (!call.write({ data: chunk, offset: position })) yield* drained
      }
      if (!cancelled) call.end()
    })
  const read = Effect.gen(function*() {
    const real = yield* resolve(workDir, request.path)
    if ((yield* Effect.promise(() => fs.stat(real))).isDirectory()) {
      return yield* new InvalidArgument({ field: "path", rule: "is a directory: read a file in it (ListFiles lists them)" })
    }
    yield* request.follow ? follow(real) : once(real)
  })
  run(
    read.pipe(
      Effect.catch((error) => Effect.sync(() => Grpc.failStream(call, error)))
    )
  )
}
