/**
 * A real, single-member etcd server in a child process, on free loopback
 * ports with a temporary data directory: what the etcd tests, the storage
 * benchmark and the testkit run against. It needs the `etcd` binary (Debian:
 * `apt-get install etcd-server`); without it, `start` fails with an
 * `EtcdServerError` that says how to install it.
 *
 * @since 0.1.0
 */
import type { ChildProcess } from "node:child_process"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as nodePath from "node:path"
import { Duration, Effect, Schedule, Schema } from "effect"
import type { Scope } from "effect"

/**
 * The etcd binary is missing, or the server did not start or stop as asked.
 * The message says what to do.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { EtcdServer } from "@berth/storage"
 *
 * const program = EtcdServer.start().pipe(
 *   Effect.catchTag("EtcdServerError", (e) => Effect.die(e.message)),
 *   Effect.scoped
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class EtcdServerError extends Schema.TaggedError<EtcdServerError>()("EtcdServerError", {
  message: Schema.String
}) {}

/**
 * A running etcd. `stop` and `kill` end the process (by pid) but keep its
 * data; `restart` brings it back on the same ports with the same data, so a
 * test can take etcd away and give it back. The process is stopped and the
 * temporary data directory removed when the scope closes.
 *
 * @since 0.1.0
 * @category models
 */
export interface EtcdServer {
  /** The client URL, e.g. `http://127.0.0.1:40123` (`https://` with TLS). */
  readonly endpoint: string
  readonly clientPort: number
  readonly peerPort: number
  /** Plain-HTTP port of `/health` and `/metrics`. */
  readonly metricsPort: number
  readonly dataDir: string
  /** The pid of the running process, or undefined while stopped. */
  readonly pid: Effect.Effect<number | undefined>
  /** SIGTERM, then SIGKILL after 5 seconds; waits until the process has exited. */
  readonly stop: Effect.Effect<void>
  /** SIGKILL, as a crash would; waits until the process has exited. */
  readonly kill: Effect.Effect<void>
  /** Starts the server again (same ports, same data) and waits until it is healthy. */
  readonly restart: Effect.Effect<void, EtcdServerError>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface StartOptions {
  /** The etcd binary. Defaults to `$BERTH_ETCD_BINARY`, else `etcd` on the PATH. */
  readonly binary?: string | undefined
  /** How long to wait for the server to become healthy. Defaults to 20 seconds. */
  readonly startTimeout?: Duration.Input | undefined
  /** Extra etcd flags, e.g. `["--max-request-bytes", "4194304"]`. */
  readonly args?: ReadonlyArray<string> | undefined
  /**
   * Serve clients over TLS (PEM file paths). With `clientCa`, clients must
   * present a certificate signed by it (mutual TLS).
   */
  readonly tls?: {
    readonly cert: string
    readonly key: string
    readonly clientCa?: string | undefined
  } | undefined
}

const INSTALL_HINT = `install etcd: on Debian or Ubuntu run "apt-get install etcd-server" (as root; the CI script ` +
  `.ci/run does this), elsewhere download a release from https://github.com/etcd-io/etcd/releases and put the etcd ` +
  `binary on the PATH, or set BERTH_ETCD_BINARY to its path`

const findBinary = (binary: string | undefined): Effect.Effect<string, EtcdServerError> =>
  Effect.suspend(() => {
    const wanted = binary ?? process.env["BERTH_ETCD_BINARY"] ?? "etcd"
    const candidates = wanted.includes("/")
      ? [wanted]
      : (process.env["PATH"] ?? "").split(nodePath.delimiter).filter((dir) => dir !== "").map((dir) => nodePath.join(dir, wanted))
    for (const candidate of candidates) {
      try {
        fs.accessSync(candidate, fs.constants.X_OK)
        if (fs.statSync(candidate).isFile()) return Effect.succeed(candidate)
      } catch {
        // not this one
      }
    }
    return Effect.fail(
      new EtcdServerError({
        message: `the etcd binary was not found (looked for ${JSON.stringify(wanted)}` +
          `${wanted.includes("/") ? "" : " on the PATH"}); ${INSTALL_HINT}`
      })
    )
  })

/** A port the kernel just gave us; another process could take it before etcd binds it, hence the retries below. */
const freePort = Effect.callback<number, EtcdServerError>((resume) => {
  const server = net.createServer()
  server.once("error", (error) => resume(Effect.fail(new EtcdServerError({ message: `no free port: ${error.message}` }))))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    server.close(() => resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 0)))
  })
})

const healthy = (port: number) =>
  Effect.callback<boolean>((resume) => {
    const request = http.get({ host: "127.0.0.1", port, path: "/health", timeout: 1_000 }, (response) => {
      let body = ""
      response.on("data", (chunk: Buffer) => (body += chunk.toString()))
      response.on("end", () => resume(Effect.succeed(response.statusCode === 200 && body.includes(`"health":"true"`))))
    })
    request.on("error", () => resume(Effect.succeed(false)))
    request.on("timeout", () => {
      request.destroy()
      resume(Effect.succeed(false))
    })
  })

const exited = (child: ChildProcess) =>
  Effect.callback<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
  })

const tail = (file: string) => {
  try {
    return fs.readFileSync(file, "utf8").trim().split("\n").slice(-8).join("\n")
  } catch {
    return "(no log)"
  }
}

/**
 * Starts etcd on free loopback ports with a fresh temporary data directory.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { EtcdServer, StateStore } from "@berth/storage"
 *
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const etcd = yield* EtcdServer.start()
 *   const store = yield* StateStore.make(StateStore.layerEtcd({ endpoints: [etcd.endpoint] }))
 *   yield* store.put("hello", new TextEncoder().encode("world"))
 *   yield* etcd.kill // etcd is gone: calls now fail with StoreError
 *   yield* etcd.restart // and it is back, with the data
 * }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const start = (options?: StartOptions): Effect.Effect<EtcdServer, EtcdServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const binary = yield* findBinary(options?.binary)
    const startTimeoutMs = Duration.toMillis(Duration.fromInputUnsafe(options?.startTimeout ?? "20 seconds"))
    const base = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(nodePath.join(os.tmpdir(), "berth-etcd-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    const dataDir = nodePath.join(base, "data")
    const logFile = nodePath.join(base, "etcd.log")
    let child: ChildProcess | undefined

    const stopWith = (signal: "SIGTERM" | "SIGKILL") =>
      Effect.gen(function*() {
        const running = child
        if (running === undefined) return
        if (running.exitCode === null && running.signalCode === null) {
          try {
            process.kill(running.pid!, signal)
          } catch {
            // already gone
          }
          if (signal === "SIGTERM") {
            yield* exited(running).pipe(
              Effect.timeoutOrElse({
                duration: "5 seconds",
                orElse: () =>
                  Effect.sync(() => {
                    try {
                      process.kill(running.pid!, "SIGKILL")
                    } catch {
                      // already gone
                    }
                  }).pipe(Effect.andThen(exited(running)))
              })
            )
          } else {
            yield* exited(running)
          }
        }
        child = undefined
      })

    const scheme = options?.tls === undefined ? "http" : "https"
    const launch = (clientPort: number, peerPort: number, metricsPort: number, initial: boolean) =>
      Effect.gen(function*() {
        const client = `${scheme}://127.0.0.1:${clientPort}`
        const peer = `http://127.0.0.1:${peerPort}`
        const log = fs.openSync(logFile, "a")
        const args = [
          "--name", "berth",
          "--data-dir", dataDir,
          "--listen-client-urls", client,
          "--advertise-client-urls", client,
          "--listen-peer-urls", peer,
          "--initial-advertise-peer-urls", peer,
          "--initial-cluster", `berth=${peer}`,
          "--initial-cluster-state", initial ? "new" : "existing",
          "--listen-metrics-urls", `http://127.0.0.1:${metricsPort}`,
          "--log-level", "warn",
          ...(options?.tls === undefined ? [] : [
            "--cert-file", options.tls.cert,
            "--key-file", options.tls.key,
            ...(options.tls.clientCa === undefined ? [] : ["--trusted-ca-file", options.tls.clientCa, "--client-cert-auth"])
          ]),
          ...(options?.args ?? [])
        ]
        const spawned = yield* Effect.try({
          try: () => spawn(binary, args, { stdio: ["ignore", log, log] }),
          catch: (cause) => new EtcdServerError({ message: `cannot start ${binary}: ${(cause as Error).message}` })
        }).pipe(Effect.ensuring(Effect.sync(() => fs.closeSync(log))))
        child = spawned
        const spawnError = yield* Effect.callback<string | undefined>((resume) => {
          spawned.once("error", (error) => resume(Effect.succeed(error.message)))
          spawned.once("spawn", () => resume(Effect.succeed(undefined)))
        })
        if (spawnError !== undefined) {
          child = undefined
          return yield* new EtcdServerError({ message: `cannot start ${binary}: ${spawnError}` })
        }
        // The metrics listener is plain HTTP even when clients need TLS, so health needs no certificates.
        const up = yield* healthy(metricsPort).pipe(
          Effect.repeat({
            until: (ok) => ok || spawned.exitCode !== null || spawned.signalCode !== null,
            schedule: Schedule.spaced("50 millis")
          }),
          Effect.timeoutOrElse({ duration: Duration.millis(startTimeoutMs), orElse: () => Effect.succeed(false) })
        )
        if (!up) {
          const died = spawned.exitCode !== null || spawned.signalCode !== null
          yield* stopWith("SIGKILL")
          return yield* new EtcdServerError({
            message: `etcd on 127.0.0.1:${clientPort} ${died ? "exited" : `was not healthy within ${startTimeoutMs} ms`}; ` +
              `its log ends with:\n${tail(logFile)}`
          })
        }
      })

    // Registered before the first launch, so that an interrupted start leaves no process behind.
    yield* Effect.addFinalizer(() => stopWith("SIGTERM"))
    // Free ports can be taken by someone else between our probe and etcd's bind: try a few pairs.
    const ports = yield* Effect.gen(function*() {
      const clientPort = yield* freePort
      const peerPort = yield* freePort
      const metricsPort = yield* freePort
      fs.rmSync(dataDir, { recursive: true, force: true })
      yield* launch(clientPort, peerPort, metricsPort, true)
      return { clientPort, peerPort, metricsPort }
    }).pipe(Effect.retry({ times: 2, while: (error) => /address already in use|exited/.test(error.message) }))

    return {
      endpoint: `${scheme}://127.0.0.1:${ports.clientPort}`,
      clientPort: ports.clientPort,
      peerPort: ports.peerPort,
      metricsPort: ports.metricsPort,
      dataDir,
      pid: Effect.sync(() => child?.pid),
      stop: stopWith("SIGTERM"),
      kill: stopWith("SIGKILL"),
      restart: Effect.gen(function*() {
        yield* stopWith("SIGTERM")
        yield* launch(ports.clientPort, ports.peerPort, ports.metricsPort, false)
      })
    } satisfies EtcdServer
  })

/**
 * Whether the etcd binary can be found (see `StartOptions.binary`), for tools
 * that want to say so before starting anything.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { EtcdServer } from "@berth/storage"
 *
 * const available = Effect.runSync(EtcdServer.isInstalled())
 * ```
 *
 * @since 0.1.0
 * @category getters
 */
export const isInstalled = (binary?: string): Effect.Effect<boolean> =>
  Effect.match(findBinary(binary), { onFailure: () => false, onSuccess: () => true })
