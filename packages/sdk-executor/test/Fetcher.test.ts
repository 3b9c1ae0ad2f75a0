import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { v1 } from "@berth/proto"
import { freePort, httpServer, makeTarGz, makeZip, reply, sha256 } from "./fixtures.ts"
import { shellTask, startExecutor, states, tempDir } from "./harness.ts"

const { TaskStatus_Reason: Reason } = v1
const read = (dir: string, file: string) => fs.readFileSync(path.join(dir, file), "utf8")

/** A task running `script` after fetching `uris`. */
const withUris = (taskId: string, script: string, uris: Array<Partial<v1.CommandUri>>) =>
  v1.TaskInfo.create({ taskId, command: { shell: true, value: script, uris } })

/** Everything in `dir`, recursively, as relative paths (to prove nothing else was written). */
const listing = (dir: string): Array<string> =>
  (fs.readdirSync(dir, { recursive: true }) as Array<string>).sort()

/** Runs `task` to its end and returns the executor (statuses, sandbox). */
const runTask = (task: v1.TaskInfo, options: Parameters<typeof startExecutor>[0] = {}) =>
  Effect.gen(function*() {
    const executor = yield* startExecutor(options)
    yield* executor.launch(task)
    expect(Exit.isSuccess(yield* executor.done())).toBe(true)
    return executor
  })

/** The run of a task whose fetch must fail: STARTING, FAILED (FETCHER_FAILED), nothing spawned. */
const expectFetchFailure = (executor: { readonly statuses: Array<v1.TaskStatus>; readonly sandbox: string }, uri: string) => {
  expect(states(executor.statuses)).toEqual(["STARTING", "FAILED"])
  const failed = executor.statuses[1]!
  expect(failed.reason).toBe(Reason.FETCHER_FAILED)
  expect(failed.message).toContain(`'${uri}'`)
  // Nothing was spawned: the command would have created its output files.
  expect(fs.existsSync(path.join(executor.sandbox, "stdout"))).toBe(false)
  return failed.message
}

describe("CommandExecutor artifacts", () => {
  it.live("downloads a plain file over HTTP, verifies its checksum, then runs the task", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      const body = "config-line-1\nconfig-line-2\n"
      server.route("/files/app.conf", reply(200, body))
      const executor = yield* runTask(withUris("plain", "cat app.conf", [
        { value: server.url("/files/app.conf"), checksum: sha256(body) }
      ]))
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(read(executor.sandbox, "stdout")).toBe(body)
      expect(server.hits("/files/app.conf")).toBe(1)
      // No temporary download file is left behind.
      expect(listing(executor.sandbox)).toEqual(["app.conf", "stderr", "stdout"])
    }))

  it.live("copies a file:// artifact to output_file, creating its directories", () =>
    Effect.gen(function*() {
      const source = yield* tempDir
      fs.writeFileSync(path.join(source, "data.bin"), "local bytes")
      const executor = yield* runTask(withUris("local", "cat conf/renamed.txt", [
        { value: pathToFileURL(path.join(source, "data.bin")).href, outputFile: "conf/renamed.txt" }
      ]))
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(read(executor.sandbox, "stdout")).toBe("local bytes")
    }))

  it.live("an executable artifact gets mode 0755 and the task runs it", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      server.route("/bin/hello.sh", reply(200, "#!/bin/sh\necho \"hello from $0 with $1\"\n"))
      const executor = yield* runTask(withUris("script", "./hello.sh arg1", [
        { value: server.url("/bin/hello.sh"), executable: true }
      ]))
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(read(executor.sandbox, "stdout")).toBe("hello from ./hello.sh with arg1\n")
      expect(fs.statSync(path.join(executor.sandbox, "hello.sh")).mode & 0o777).toBe(0o755)
    }))

  it.live("extracts a .tar.gz next to it, keeping file modes; without extract it stays an archive", () =>
    Effect.gen(function*() {
      const work = yield* tempDir
      const archive = path.join(work, "app.tar.gz")
      yield* Effect.promise(() =>
        makeTarGz(work, archive, { "app/bin/start@755": "#!/bin/sh\necho started; cat app/etc/conf\n", "app/etc/conf": "c=1\n" })
      )
      const server = yield* httpServer
      server.route("/app.tar.gz", reply(200, fs.readFileSync(archive)))
      server.route("/copy.tgz", reply(200, fs.readFileSync(archive)))
      const executor = yield* runTask(withUris("tar", "app/bin/start", [
        { value: server.url("/app.tar.gz"), extract: true },
        { value: server.url("/copy.tgz"), extract: false }
      ]))
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(read(executor.sandbox, "stdout")).toBe("started\nc=1\n")
      expect(fs.statSync(path.join(executor.sandbox, "app/bin/start")).mode & 0o111).not.toBe(0)
      expect(listing(executor.sandbox)).toEqual([
        "app",
        "app.tar.gz",
        "app/bin",
        "app/bin/start",
        "app/etc",
        "app/etc/conf",
        "copy.tgz",
        "stderr",
        "stdout"
      ])
    }))

  it.live("extracts a .zip with directories, modes and an inner symbolic link", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      server.route("/bundle.zip", reply(200, makeZip([
        { name: "bundle/" },
        { name: "bundle/run.sh", data: "#!/bin/sh\ncat bundle/data/msg.txt bundle/latest\n", mode: 0o100755 },
        { name: "bundle/data/msg.txt", data: "zip content\n" },
        { name: "bundle/latest", data: "data/msg.txt", mode: 0o120777 }
      ])))
      const executor = yield* runTask(withUris("zip", "bundle/run.sh", [{ value: server.url("/bundle.zip"), extract: true }]))
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(read(executor.sandbox, "stdout")).toBe("zip content\nzip content\n")
      expect(fs.readlinkSync(path.join(executor.sandbox, "bundle/latest"))).toBe("data/msg.txt")
    }))

  it.live("a checksum mismatch fails the task with FETCHER_FAILED and leaves no file", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      server.route("/tampered.bin", reply(200, "tampered"))
      const expected = sha256("original")
      const executor = yield* runTask(withUris("checksum", "echo should-not-run", [
        { value: server.url("/tampered.bin"), checksum: expected }
      ]))
      const message = expectFetchFailure(executor, server.url("/tampered.bin"))
      expect(message).toBe(
        `Failed to fetch '${server.url("/tampered.bin")}': checksum mismatch: expected ${expected}, got ${sha256("tampered")}`
      )
      expect(listing(executor.sandbox)).toEqual([])
    }))

  it.live("an HTTP 404 fails the task, naming the URI and the status", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      const executor = yield* runTask(withUris("missing", "true", [{ value: server.url("/nope.tgz"), extract: true }]))
      const message = expectFetchFailure(executor, server.url("/nope.tgz"))
      expect(message).toBe(`Failed to fetch '${server.url("/nope.tgz")}': HTTP 404 Not Found`)
    }))

  it.live("an unreachable port fails the task with the connection error", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const uri = `http://127.0.0.1:${port}/artifact.bin`
      const executor = yield* runTask(withUris("unreachable", "true", [{ value: uri }]))
      const message = expectFetchFailure(executor, uri)
      expect(message).toContain("ECONNREFUSED")
    }))

  it.live("a missing file:// source fails the task", () =>
    Effect.gen(function*() {
      const uri = pathToFileURL(`/nonexistent/berth-${randomUUID()}/x.tgz`).href
      const executor = yield* runTask(withUris("nofile", "true", [{ value: uri }]))
      expect(expectFetchFailure(executor, uri)).toContain("ENOENT")
    }))

  it.live("refuses a zip-slip archive: nothing is written inside or outside the sandbox", () =>
    Effect.gen(function*() {
      const escapee = `berth-zip-slip-${randomUUID()}.txt`
      const server = yield* httpServer
      server.route("/evil.zip", reply(200, makeZip([
        { name: "innocent.txt", data: "fine" },
        { name: `../${escapee}`, data: "escaped!" }
      ])))
      const executor = yield* runTask(withUris("zipslip", "true", [{ value: server.url("/evil.zip"), extract: true }]))
      const message = expectFetchFailure(executor, server.url("/evil.zip"))
      expect(message).toContain(`refusing archive entry '../${escapee}'`)
      expect(fs.existsSync(path.join(path.dirname(executor.sandbox), escapee))).toBe(false)
      // The archive was checked before anything was extracted.
      expect(listing(executor.sandbox)).toEqual(["evil.zip"])
    }))

  it.live("refuses zip entries that are absolute or link out, and tar entries with '..' or links out", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      const work = yield* tempDir
      const escapee = `berth-tar-slip-${randomUUID()}.txt`
      yield* Effect.promise(() =>
        makeTarGz(work, path.join(work, "slip.tgz"), { "inner/ok.txt": "ok", [escapee]: "escaped!" }, {
          cwd: "inner",
          paths: ["ok.txt", `../${escapee}`]
        })
      )
      yield* Effect.promise(() =>
        makeTarGz(work, path.join(work, "link.tgz"), { "ok.txt": "ok" }, { symlinks: { "etc": "../../../../../etc" } })
      )
      server.route("/slip.tgz", reply(200, fs.readFileSync(path.join(work, "slip.tgz"))))
      server.route("/link.tgz", reply(200, fs.readFileSync(path.join(work, "link.tgz"))))
      server.route("/absolute.zip", reply(200, makeZip([{ name: "/tmp/berth-absolute.txt", data: "x" }])))
      server.route("/link.zip", reply(200, makeZip([{ name: "out", data: "/etc", mode: 0o120777 }])))

      const cases = [
        ["/slip.tgz", `refusing archive entry '../${escapee}': it contains a '..' component`],
        ["/link.tgz", "refusing archive entry 'etc': it links to '../../../../../etc', outside the sandbox"],
        ["/absolute.zip", "refusing archive entry '/tmp/berth-absolute.txt': it is an absolute path"],
        ["/link.zip", "refusing archive entry 'out': it links to the absolute path '/etc'"]
      ] as const
      for (const [route, expected] of cases) {
        const executor = yield* runTask(withUris("slip", "true", [{ value: server.url(route), extract: true }]))
        const message = expectFetchFailure(executor, server.url(route))
        expect(message).toContain(expected)
        expect(listing(executor.sandbox)).toEqual([route.slice(1)])
        expect(fs.existsSync(path.join(path.dirname(executor.sandbox), escapee))).toBe(false)
      }
    }))

  it.live("the cache: a second launch with the same URI and checksum does not download again", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      const cacheDir = path.join(yield* tempDir, "cache")
      const body = "#!/bin/sh\necho cached tool\n"
      server.route("/tool.sh", reply(200, body))
      const uri = { value: server.url("/tool.sh"), checksum: sha256(body), executable: true, cache: true }

      const first = yield* runTask(withUris("cache-1", "./tool.sh", [uri]), { fetcher: { cacheDir } })
      expect(states(first.statuses)).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(server.hits("/tool.sh")).toBe(1)

      const second = yield* runTask(withUris("cache-2", "./tool.sh", [uri]), { fetcher: { cacheDir } })
      expect(states(second.statuses)).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(read(second.sandbox, "stdout")).toBe("cached tool\n")
      expect(server.hits("/tool.sh")).toBe(1)
      // The sandbox gets its own copy, with its own mode: the cache entry stays as it was fetched.
      expect(fs.readdirSync(cacheDir)).toHaveLength(1)
      expect(fs.statSync(path.join(cacheDir, fs.readdirSync(cacheDir)[0]!)).mode & 0o111).toBe(0)

      // Without `cache`, or with another checksum (another key), it is downloaded again.
      yield* runTask(withUris("cache-3", "true", [{ ...uri, cache: false }]), { fetcher: { cacheDir } })
      expect(server.hits("/tool.sh")).toBe(2)
      yield* runTask(withUris("cache-4", "true", [{ ...uri, checksum: "" }]), { fetcher: { cacheDir } })
      expect(server.hits("/tool.sh")).toBe(3)
      expect(fs.readdirSync(cacheDir)).toHaveLength(2)
    }))

  it.live("the cache evicts the least recently used artifacts beyond its size", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      const cacheDir = path.join(yield* tempDir, "cache")
      for (const name of ["a", "b", "c"]) server.route(`/${name}`, reply(200, name.repeat(600)))
      const fetcher = { cacheDir, cacheSizeBytes: 1500 }
      const fetchCached = (name: string) =>
        runTask(withUris(`evict-${name}`, "true", [{ value: server.url(`/${name}`), cache: true }]), { fetcher })
      yield* fetchCached("a")
      yield* Effect.sleep("20 millis")
      yield* fetchCached("b")
      yield* Effect.sleep("20 millis")
      yield* fetchCached("a") // a hit, which makes "a" the most recently used
      yield* Effect.sleep("20 millis")
      yield* fetchCached("c") // 1800 bytes > 1500: "b" goes
      expect([server.hits("/a"), server.hits("/b"), server.hits("/c")]).toEqual([1, 1, 1])
      yield* fetchCached("a")
      yield* fetchCached("b")
      expect([server.hits("/a"), server.hits("/b")]).toEqual([1, 2])
    }))

  it.live("bounds downloads: size cap, stall timeout and overall timeout", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      server.route("/big", reply(200, "x".repeat(4096)))
      // No Content-Length: the cap must hold while streaming too.
      server.route("/big-chunked", (_, response) => {
        response.writeHead(200)
        for (let i = 0; i < 8; i++) response.write("y".repeat(512))
        response.end()
      })
      server.route("/stall", (_, response) => {
        response.writeHead(200)
        response.write("a few bytes, then nothing")
      })
      const trickle = { timer: undefined as NodeJS.Timeout | undefined }
      server.route("/trickle", (_, response) => {
        response.writeHead(200)
        trickle.timer = setInterval(() => response.write("."), 20)
        response.on("close", () => clearInterval(trickle.timer))
      })
      const fetcher = { maxBytes: 1024, stallTimeout: "300 millis", timeout: "800 millis" } as const
      const cases = [
        ["/big", "the artifact has 4096 bytes, more than the limit of 1024"],
        ["/big-chunked", "the artifact is larger than the limit of 1024 bytes"],
        ["/stall", "the download stalled: no data for 300ms"],
        ["/trickle", "timed out after 800ms"]
      ] as const
      for (const [route, expected] of cases) {
        const startedAt = performance.now()
        const executor = yield* runTask(withUris("bounded", "true", [{ value: server.url(route) }]), { fetcher })
        const elapsed = performance.now() - startedAt
        expect(expectFetchFailure(executor, server.url(route))).toBe(`Failed to fetch '${server.url(route)}': ${expected}`)
        expect(listing(executor.sandbox)).toEqual([])
        expect(elapsed).toBeLessThan(3_000)
      }
      clearInterval(trickle.timer)
    }))

  it.live("a kill while fetching stops the download: KILLED, nothing spawned", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      server.route("/slow", (_, response) => {
        response.writeHead(200)
        response.write("partial")
      })
      const executor = yield* startExecutor()
      yield* executor.launch(withUris("killed-fetch", "echo ran > ran", [{ value: server.url("/slow") }]))
      yield* executor.nth(1)
      yield* Effect.sleep("100 millis")
      yield* executor.kill("killed-fetch")
      expect(Exit.isSuccess(yield* executor.done(2_000))).toBe(true)
      expect(states(executor.statuses)).toEqual(["STARTING", "KILLED"])
      expect(executor.statuses[1]!.reason).toBe(Reason.KILLED_BY_SCHEDULER)
      expect(executor.statuses[1]!.message).toContain("never started")
      yield* Effect.sleep("100 millis")
      expect(listing(executor.sandbox)).toEqual([])
    }))

  it.live("invalid URIs are ERROR (TASK_INVALID) naming the field, before anything starts", () =>
    Effect.gen(function*() {
      const cases = [
        [{ value: "ftp://example.org/x.tgz" }, "command.uris[0].value: the scheme must be file, http or https, not 'ftp'"],
        [{ value: "not a uri" }, "command.uris[0].value: 'not a uri' is not an absolute URI"],
        [{ value: "http://127.0.0.1/x", checksum: "md5:abc" }, "command.uris[0].checksum: must be \"sha256:\""],
        [{ value: "http://127.0.0.1/x", outputFile: "../x" }, "command.uris[0].output_file: must stay inside the sandbox"],
        [{ value: "http://127.0.0.1/dir/" }, "command.uris[0].output_file: required"]
      ] as const
      for (const [uri, expected] of cases) {
        const executor = yield* runTask(withUris("invalid", "true", [uri]))
        expect(states(executor.statuses)).toEqual(["ERROR"])
        expect(executor.statuses[0]!.reason).toBe(Reason.TASK_INVALID)
        expect(executor.statuses[0]!.message).toContain(expected)
      }
    }))

  it.live("a task without URIs is unaffected by fetcher options", () =>
    Effect.gen(function*() {
      const executor = yield* runTask(shellTask("plain-run", "echo ok"), { fetcher: { maxBytes: 1 } })
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "FINISHED"])
    }))
})
