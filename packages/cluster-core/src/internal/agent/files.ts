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

/** Reads a byte range of a sandbox file (one chunk; `follow` is not served yet). */
export const readFile = (workDir: string, run: (effect: Effect.Effect<void>) => void) =>
(call: grpc.ServerWritableStream<v1.ReadFileRequest, v1.ReadFileResponse>) => {
  const request = call.request
  const read = Effect.gen(function*() {
    const real = yield* resolve(workDir, request.path)
    yield* Effect.acquireUseRelease(
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
  })
  run(
    read.pipe(
      Effect.catch((error) => Effect.sync(() => Grpc.failStream(call, error)))
    )
  )
}
