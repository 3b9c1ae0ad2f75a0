/**
 * StateStore throughput: SQLite (durable: WAL, synchronous=FULL, a fresh file in a temp dir) and
 * etcd (a real single-member etcd started here on loopback ports), measured the same way:
 * CONCURRENCY fibers issue one operation after another for a fixed time, and we count completions.
 *
 *   puts  put of a 1 KiB value to a key of its own
 *   cas   compare-and-set of a 1 KiB value on a key of its own, at the version it last wrote
 *   txn   a transaction of 3 operations: a guard on one key, a put and a delete
 *   gets  get of an existing 1 KiB value
 *
 * Then, against the same etcd in the same run, `etcdctl check perf --load=xl` (etcd's own write
 * benchmark: 1000 clients putting 1 KiB values as fast as the server allows, up to 15,000/s, for
 * 60 s) gives the reference write rate. Targets (issue 5): SQLite >= 5,000 durable CAS writes/s;
 * the etcd backend's puts >= 50% of etcdctl's rate.
 *
 * Prints progress on stderr and ONE JSON object as the last line of stdout. Bounded (about 90 s);
 * stops the etcd and etcdctl processes it started by pid and removes its temp dirs.
 *
 * Usage: npm run build && npm run bench:storage   [-- --seconds 2 --concurrency 64 --no-etcdctl]
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { EtcdServer, StateStore, Txn } from "@berth/storage"
import { Effect, Option } from "effect"

const major = Number(process.versions.node.split(".")[0])
if (major < 22) {
  process.stderr.write(`bench:storage: Node ${process.versions.node} is too old (Berth needs >= 22); run it with npm run bench:storage\n`)
  process.exit(1)
}

const args = process.argv.slice(2)
const arg = (name, fallback) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : fallback)
const SECONDS = Number(arg("seconds", "3"))
const CONCURRENCY = Number(arg("concurrency", "64"))
const ETCD_CONCURRENCY = Number(arg("etcd-concurrency", "256"))
const RUN_ETCDCTL = !args.includes("--no-etcdctl")
const VALUE = new Uint8Array(1024).fill(120)
const log = (message) => process.stderr.write(`bench:storage: ${message}\n`)

/** `concurrency` workers call `op(worker, i)` back to back for SECONDS; the completed count per second. */
const rate = (name, concurrency, op) =>
  Effect.gen(function*() {
    let done = 0
    const deadline = performance.now() + SECONDS * 1000
    const worker = (w) =>
      Effect.gen(function*() {
        for (let i = 0; performance.now() < deadline; i++) {
          yield* op(w, i)
          done++
        }
      })
    const started = performance.now()
    yield* Effect.forEach(Array.from({ length: concurrency }, (_, w) => w), worker, { concurrency: "unbounded", discard: true })
    const perSecond = Math.round(done / ((performance.now() - started) / 1000))
    log(`${name}: ${perSecond}/s (${done} in ${SECONDS} s, ${concurrency} concurrent)`)
    return perSecond
  })

const measure = (backend, store, concurrency) =>
  Effect.gen(function*() {
    // Warm-up: connections, prepared statements, JIT.
    yield* Effect.forEach(Array.from({ length: 200 }, (_, i) => i), (i) => store.put(`warm/${i}`, VALUE), { concurrency: 32, discard: true })
    const putsPerSecond = yield* rate(`${backend} puts`, concurrency, (w, i) => store.put(`puts/${w}/${i % 1000}`, VALUE))
    const versions = new Map()
    const casPerSecond = yield* rate(`${backend} cas`, concurrency, (w) =>
      Effect.gen(function*() {
        const version = versions.get(w) ?? 0
        const entry = yield* store.compareAndSet(`cas/${w}`, version, VALUE)
        versions.set(w, entry.version)
      }))
    const txnPerSecond = yield* rate(`${backend} txn`, concurrency, (w, i) =>
      store.transaction([
        Txn.check(`txn/${w}/guard`, 0),
        Txn.put(`txn/${w}/${i % 100}`, VALUE),
        Txn.delete(`txn/${w}/${(i + 50) % 100}`)
      ]))
    const getsPerSecond = yield* rate(`${backend} gets`, concurrency, (w, i) =>
      Effect.map(store.get(`puts/${w}/${i % 10}`), Option.isSome))
    return { backend, putsPerSecond, casPerSecond, txnPerSecond, getsPerSecond }
  })

/** etcdctl's own write benchmark against the same server; its reported throughput in writes/s. */
const etcdctlPerf = (endpoint) =>
  Effect.callback((resume) => {
    const child = spawn("etcdctl", ["--endpoints", endpoint, "check", "perf", "--load=xl"], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ETCDCTL_API: "3" }
    })
    let output = ""
    child.stdout.on("data", (chunk) => (output += chunk))
    child.stderr.on("data", (chunk) => (output += chunk))
    // etcdctl runs 60 s by itself; this is a second line of defence.
    const timer = setTimeout(() => child.pid && process.kill(child.pid, "SIGKILL"), 90_000)
    child.on("error", (error) => {
      clearTimeout(timer)
      log(`etcdctl could not run (${error.message}); install it with "apt-get install etcd-client"`)
      resume(Effect.succeed(null))
    })
    child.on("exit", () => {
      clearTimeout(timer)
      const match = /Throughput (?:is|too low:) (\d+) writes\/s/.exec(output)
      if (match === null) log(`etcdctl check perf printed no throughput:\n${output.slice(-500)}`)
      else log(`etcdctl check perf --load=xl: ${match[1]} writes/s`)
      resume(Effect.succeed(match === null ? null : Number(match[1])))
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      if (child.exitCode === null && child.pid) process.kill(child.pid, "SIGKILL")
    })
  })

const program = Effect.gen(function*() {
  const dir = yield* Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "berth-bench-storage-"))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )
  const results = []

  log(`SQLite at ${dir}/state.db (WAL, synchronous=FULL)`)
  const sqlite = yield* StateStore.make(StateStore.layerSqlite({ path: path.join(dir, "state.db") }))
  results.push(yield* measure("sqlite", sqlite, CONCURRENCY))

  const etcd = yield* EtcdServer.start()
  log(`etcd at ${etcd.endpoint} (pid ${yield* etcd.pid}, data in ${etcd.dataDir})`)
  const store = yield* StateStore.make(StateStore.layerEtcd({ endpoints: [etcd.endpoint], prefix: "bench/" }))
  results.push(yield* measure("etcd", store, ETCD_CONCURRENCY))

  const etcdctlPutsPerSecond = RUN_ETCDCTL ? yield* etcdctlPerf(etcd.endpoint) : null
  return { results, etcdctlPutsPerSecond }
})

const started = performance.now()
const output = await Effect.runPromise(Effect.scoped(program))
const [sqlite, etcd] = output.results
const summary = {
  ...output,
  etcdVersusEtcdctl: output.etcdctlPutsPerSecond ? Number((etcd.putsPerSecond / output.etcdctlPutsPerSecond).toFixed(2)) : null,
  machine: {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? "unknown",
    memoryGiB: Number((os.totalmem() / 1024 ** 3).toFixed(1)),
    node: process.version,
    os: `${os.type()} ${os.release()}`
  },
  settings: { seconds: SECONDS, concurrency: CONCURRENCY, etcdConcurrency: ETCD_CONCURRENCY, valueBytes: VALUE.byteLength },
  targets: {
    sqliteCasPerSecond: { target: 5000, met: sqlite.casPerSecond >= 5000 },
    etcdPutsVersusEtcdctl: { target: 0.5, met: output.etcdctlPutsPerSecond ? etcd.putsPerSecond >= 0.5 * output.etcdctlPutsPerSecond : null }
  },
  elapsedSeconds: Math.round((performance.now() - started) / 1000)
}
process.stdout.write(JSON.stringify(summary) + "\n")
