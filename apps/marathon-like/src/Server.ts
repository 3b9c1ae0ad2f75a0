/**
 * The marathon-like server: the REST API v2, the event stream, metrics and the web UI over HTTP,
 * and, while this instance leads, the scheduler on a `SchedulerSession`. Several instances share
 * one store; one leads (by `Election`), the others proxy every API request to it.
 *
 * @since 0.1.0
 */
import { SchedulerSession } from "@berth/sdk-scheduler"
import { Election, StateStore, type StoreError, Txn } from "@berth/storage"
import { Clock, Context, Deferred, type Duration, Effect, Fiber, Layer, Option, Schedule, Schema, type Scope, Semaphore, Stream } from "effect"
import * as http from "node:http"
import { promisify } from "node:util"
import * as zlib from "node:zlib"
import * as Prometheus from "prom-client"
import * as api from "./internal/api.ts"
import { Core, KEYS } from "./internal/core.ts"
import { type BusEvent, EventBus, frameOf } from "./internal/events.ts"
import { resolveUiAsset } from "./internal/ui/static.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The master's gRPC endpoint(s), "host:port[,host:port]". */
  readonly master: string
  /** The HTTP port (0: any free port). Default 8080. */
  readonly httpPort?: number | undefined
  /** The address to listen on. Default "0.0.0.0". */
  readonly bind?: string | undefined
  /** The hostname other instances and clients reach this one by. Default "127.0.0.1". */
  readonly hostname?: string | undefined
  /** A store URL: "sqlite:<path>" (default "sqlite:.marathon-like/state.db"), "etcd:<host:port>,…" for HA, or "memory:". */
  readonly store?: string | undefined
  /** The framework name. Default "marathon-like". */
  readonly frameworkName?: string | undefined
  /** The role the framework subscribes with; resident apps reserve for it. Default "marathon". */
  readonly role?: string | undefined
  /** How long a dead leader keeps leadership before another instance takes over. Default 5 s. */
  readonly leaderTtl?: Duration.Input | undefined
  /** Bodies above this many bytes get 413 and change nothing. Default 1 MiB. */
  readonly maxBodyBytes?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Handle {
  /** "http://hostname:port" */
  readonly url: string
  readonly port: number
  readonly isLeader: () => boolean
  /**
   * Fails when this instance stopped for good: the master removed the framework (torn down,
   * failed over to another scheduler, or its failover timeout expired). It never succeeds.
   * The CLI waits on it and exits non-zero with the error's message.
   */
  readonly stopped: Effect.Effect<never, FrameworkGone>
}

/**
 * The server could not start.
 *
 * @since 0.1.0
 * @category errors
 */
export class ServeError extends Schema.TaggedError<ServeError>()("ServeError", { message: Schema.String }) {}

/**
 * The master removed the framework, so its id can never subscribe again. The instance stops
 * scheduling (and stops campaigning) instead of retrying forever or silently registering a new
 * framework: its apps would run twice, or their tasks would be orphaned. The message says what
 * happened and what an operator can do.
 *
 * @since 0.1.0
 * @category errors
 */
export class FrameworkGone extends Schema.TaggedError<FrameworkGone>()("FrameworkGone", {
  frameworkId: Schema.String,
  reason: Schema.String,
  store: Schema.String
}) {
  override get message(): string {
    return `the master removed framework ${this.frameworkId} (${this.reason}). A removed framework id can never subscribe ` +
      `again, so marathon-like stops instead of retrying. Unless another scheduler took the framework over, the master has ` +
      `killed its tasks; the app definitions ` +
      `are still in the store (${this.store}). To start over as a new framework with the same apps, delete the stored ` +
      `framework id (\`marathon-like forget-framework --state ${this.store}\`) and start marathon-like again.`
  }
}

const LEADER_KEY = "leader"
const VERSION = "0.1.0"

interface Leading {
  readonly core: Core
  readonly lock: Semaphore.Semaphore
}

/**
 * Starts an instance for the scope's lifetime: the HTTP server at once, the scheduler whenever
 * this instance wins the election.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Server } from "@berth/marathon-like"
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const server = yield* Server.serve({ master: "127.0.0.1:5050", httpPort: 8080, store: "sqlite:state.db" })
 *   yield* Effect.log(`marathon-like at ${server.url}`)
 *   yield* Effect.never
 * }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = (options: Options): Effect.Effect<Handle, ServeError | StoreError.StoreError | StoreError.InvalidStoreUrl, Scope.Scope> =>
  Effect.gen(function*() {
    const storeUrl = options.store ?? "sqlite:.marathon-like/state.db"
    const store = yield* StateStore.make(Layer.provide(StateStore.layerNamespace("marathon-like/"), StateStore.layerFromUrl(storeUrl)))
    const hostname = options.hostname ?? "127.0.0.1"
    const frameworkName = options.frameworkName ?? "marathon-like"
    const role = options.role ?? "marathon"
    const maxBody = options.maxBodyBytes ?? 1024 * 1024
    // The scheduler core and the event bus take time from the Effect Clock (testable, virtual).
    const clock = yield* Clock.Clock
    const now = () => clock.currentTimeMillisUnsafe()
    // Ids start from the clock so they keep increasing across leader changes (Last-Event-ID resume).
    const bus = new EventBus(10_000, now)
    bus.startAfter(now() * 1000)
    let leading: Leading | undefined
    let frameworkId: string | undefined
    let gone: FrameworkGone | undefined
    const stopped = yield* Deferred.make<never, FrameworkGone>()

    // ---------------------------------------------------------------------------------- metrics
    const registry = new Prometheus.Registry()
    const gauge = (name: string, help: string, value: () => number) =>
      new Prometheus.Gauge({ name, help, registers: [registry], collect() { this.set(value()) } })
    gauge("marathon_apps_active_gauge", "Apps defined", () => leading?.core.apps.size ?? 0)
    gauge("marathon_instances_running_gauge", "Instances whose task is RUNNING", () =>
      leading === undefined ? 0 : [...leading.core.instances.values()].filter((i) => i.state === "TASK_RUNNING").length)
    gauge("marathon_deployments_active_gauge", "Deployments in flight", () => leading?.core.deployments.size ?? 0)
    gauge("marathon_launch_queue_gauge", "Launches waiting for offers", () =>
      leading === undefined ? 0 : [...leading.core.wanted.values()].reduce((a, b) => a + b, 0))
    gauge("marathon_leader_gauge", "1 on the leader", () => (leading === undefined ? 0 : 1))
    gauge("marathon_events_subscribers_gauge", "Open /v2/events streams", () => bus.subscribers)
    const requests = new Prometheus.Histogram({
      name: "marathon_http_request_duration_seconds",
      help: "HTTP request durations",
      labelNames: ["method", "status"] as const,
      buckets: [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1],
      registers: [registry]
    })

    // ------------------------------------------------------------------------------------- http
    const server = http.createServer((req, res) => {
      const started = performance.now()
      res.on("finish", () => requests.observe({ method: req.method ?? "GET", status: String(res.statusCode) }, (performance.now() - started) / 1000))
      handle(req, res).catch((e) => {
        if (!res.headersSent) send(res, 500, { message: String(e) })
        else res.destroy()
      })
    })
    server.keepAliveTimeout = 65_000

    const url = (port: number) => `http://${hostname}:${port}`
    let self = ""

    const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
      const parsed = new URL(req.url ?? "/", "http://x")
      const path = parsed.pathname
      const method = req.method ?? "GET"
      if (path === "/ping") return sendText(res, 200, "pong")
      if (path === "/metrics" || path === "/metrics/prometheus") {
        res.writeHead(200, { "Content-Type": registry.contentType })
        res.end(await registry.metrics())
        return
      }
      if (path === "/" && method === "GET") {
        res.writeHead(302, { Location: "/ui/" })
        res.end()
        return
      }
      if ((path === "/ui" || path.startsWith("/ui/")) && method === "GET") {
        const asset = await Effect.runPromise(resolveUiAsset(path))
        if (Option.isNone(asset)) return send(res, 404, { message: `No UI file at ${path}` })
        res.writeHead(200, { "Content-Type": asset.value.contentType, "Cache-Control": asset.value.cacheControl })
        res.end(asset.value.body)
        return
      }
      if (gone !== undefined && path.startsWith("/v2/")) return send(res, 503, { message: gone.message })
      const mine = leading
      // The leader answers by itself; only followers (and /v2/leader) read the election key.
      const leaderUrl = mine !== undefined ? self : await Effect.runPromise(currentLeader)
      if (path === "/v2/leader" && method === "GET") {
        return leaderUrl === undefined
          ? send(res, 404, { message: "There is no leader" })
          : send(res, 200, { leader: leaderUrl.replace(/^https?:\/\//, "") })
      }
      if (mine === undefined) {
        if (leaderUrl === undefined || leaderUrl === self || req.headers["x-marathon-via"] !== undefined) {
          return send(res, 503, { message: "Could not determine the current leader" })
        }
        return proxy(req, res, leaderUrl)
      }
      if (path === "/v2/leader" && method === "DELETE") {
        send(res, 200, { message: "Leadership abdicated" })
        abdicate()
        return
      }
      if (path === "/v2/info" && method === "GET") {
        return send(res, 200, {
          name: "marathon-like",
          version: VERSION,
          buildref: "berth",
          elected: true,
          leader: self.replace(/^https?:\/\//, ""),
          frameworkId: frameworkId ?? null,
          marathon_config: {
            master: options.master, framework_name: frameworkName, hostname, mesos_role: role, mesos_leader_ui_url: null,
            failover_timeout: 604800, ha: true, checkpoint: true, local_port_min: null, local_port_max: null
          },
          http_config: { http_port: Number(new URL(self).port) },
          zookeeper_config: { zk: storeUrl.startsWith("etcd:") ? storeUrl : null, store: storeUrl.replace(/\?.*$/, "") },
          event_subscriber: null
        })
      }
      if (path === "/v2/events" && method === "GET") return events(req, res, parsed.searchParams)

      // A JSON body: bounded, parsed before anything is touched.
      let body: unknown = undefined
      if (method === "POST" || method === "PUT" || method === "PATCH") {
        const raw = await readBody(req, maxBody)
        if (raw === "too-large") {
          res.setHeader("Connection", "close")
          return send(res, 413, { message: `Request body exceeds the limit of ${maxBody} bytes` })
        }
        if (raw.length > 0) {
          try {
            body = JSON.parse(raw.toString("utf8"))
          } catch (e) {
            return send(res, 400, { message: "Invalid JSON", details: [{ path: "/", errors: [(e as Error).message] }] })
          }
        }
      }
      // Reads see a consistent snapshot without the lock (the core's maps change only between
      // awaits); writes take it, so they never interleave with offers, statuses or converge passes.
      const handled = api.handle(mine.core, { method, path, query: parsed.searchParams, body, accept: req.headers.accept }, now)
      const response = await Effect.runPromise(method === "GET" ? handled : mine.lock.withPermit(handled))
      if (response.status === 204) {
        res.writeHead(204, response.headers)
        res.end()
        return
      }
      if (response.raw !== undefined) {
        const etag = response.headers?.ETag
        if (etag !== undefined && response.status === 200 && ifNoneMatch(req.headers["if-none-match"], etag)) {
          res.writeHead(304, { ETag: etag })
          res.end()
          return
        }
        if (typeof response.raw !== "string" && response.raw.length >= GZIP_MIN_BYTES && acceptsGzip(req.headers["accept-encoding"])) {
          // Compressed once per cached answer (in the thread pool, not on the event loop).
          const zipped = await gzipOnce(response.raw)
          return sendRaw(res, response.status, zipped, { ...response.headers, "Content-Encoding": "gzip", Vary: "Accept-Encoding" })
        }
        sendRaw(res, response.status, response.raw, response.headers)
      } else send(res, response.status, response.body, response.headers)
    }

    const events = (req: http.IncomingMessage, res: http.ServerResponse, query: URLSearchParams) => {
      const accept = req.headers.accept ?? ""
      if (!accept.includes("text/event-stream")) return send(res, 406, { message: "GET /v2/events needs the header Accept: text/event-stream" })
      const types = new Set(query.getAll("event_type"))
      const wanted = (t: string) => types.size === 0 || types.has(t)
      res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache", Connection: "keep-alive" })
      // Frames published in one burst (a batch of status updates) go out in one socket write,
      // after the burst, instead of one write each in the middle of the scheduler's work.
      let pending: Array<string> = []
      let flushing = false
      const flush = () => {
        flushing = false
        if (pending.length === 0 || res.destroyed) return
        const text = pending.join("")
        pending = []
        res.write(text)
      }
      const write = (e: BusEvent) => {
        if (!wanted(e.eventType)) return
        pending.push(frameOf(e))
        if (!flushing) {
          flushing = true
          setImmediate(flush)
        }
      }
      const last = Number(req.headers["last-event-id"] ?? query.get("lastEventId") ?? NaN)
      if (Number.isFinite(last)) for (const e of bus.since(last)) write(e)
      const unsubscribe = bus.subscribe(write)
      const keepAlive = setInterval(() => res.write(":\n\n"), 15_000)
      const remote = req.socket.remoteAddress ?? null
      bus.publish("event_stream_attached", { remoteAddress: remote })
      res.on("close", () => {
        clearInterval(keepAlive)
        unsubscribe()
        bus.publish("event_stream_detached", { remoteAddress: remote })
      })
    }

    const currentLeader = Election.leader(LEADER_KEY).pipe(
      Effect.provideService(StateStore.StateStore, store),
      Effect.map((o) => (Option.isSome(o) ? new TextDecoder().decode(o.value.value) : undefined)),
      Effect.orElseSucceed(() => undefined)
    )

    const port = yield* Effect.callback<number, ServeError>((resume) => {
      server.once("error", (e) => resume(Effect.fail(new ServeError({ message: `cannot listen on ${options.bind ?? "0.0.0.0"}:${options.httpPort ?? 8080}: ${e.message}` }))))
      server.listen(options.httpPort ?? 8080, options.bind ?? "0.0.0.0", () => resume(Effect.succeed((server.address() as { port: number }).port)))
    })
    self = url(port)
    yield* Effect.addFinalizer(() => Effect.callback<void>((resume) => {
      server.closeAllConnections()
      server.close(() => resume(Effect.void))
    }))

    // ------------------------------------------------------------------------------ leadership
    let abdicateNow: (() => void) | undefined
    const abdicate = () => abdicateNow?.()

    const lead = Effect.scoped(Effect.gen(function*() {
      const leadership = yield* Election.campaign(LEADER_KEY, new TextEncoder().encode(self), { ttl: options.leaderTtl ?? "5 seconds" })
      yield* Effect.logInfo(`marathon-like: ${self} is the leader`)
      const core = new Core({ store, events: bus, role, principal: frameworkName, fence: { key: LEADER_KEY, version: leadership.entry.version }, now })
      yield* core.load
      const stored = yield* store.get(KEYS.frameworkId)
      const storedId = Option.isSome(stored) ? new TextDecoder().decode(stored.value.value) : undefined
      const session = Context.get(
        yield* Layer.build(SchedulerSession.layer({
          master: options.master,
          framework: { name: frameworkName, roles: [role], principal: frameworkName, ...(storedId === undefined ? {} : { frameworkId: storedId }) }
        })),
        SchedulerSession.SchedulerSession
      )
      core.attach({
        accept: session.accept,
        decline: session.decline,
        kill: session.kill,
        reconcile: session.reconcile,
        revive: () => session.revive()
      })
      const lock = yield* Semaphore.make(1)
      const loop = session.events.pipe(
        Stream.runForEach((event) => {
          switch (event.$case) {
            case "subscribed":
              return lock.withPermit(Effect.gen(function*() {
                frameworkId = event.value.frameworkId
                if (storedId !== event.value.frameworkId) {
                  yield* store.transaction([Txn.check(LEADER_KEY, leadership.entry.version), Txn.put(KEYS.frameworkId, new TextEncoder().encode(event.value.frameworkId))]).pipe(Effect.ignore)
                }
                yield* core.reconcileAll
              }))
            case "offers":
              return lock.withPermit(core.handleOffers(event.value.offers))
            case "update":
              // One store write for the batch, then the acknowledgements (batched by the session).
              return lock.withPermit(core.handleStatuses(event.value.statuses)).pipe(
                Effect.andThen(Effect.forEach(event.value.statuses, (status) => session.acknowledge(status).pipe(Effect.ignore), { concurrency: "unbounded", discard: true }))
              )
            case "updateOperationStatus":
              return Effect.forEach(event.value.statuses, (s) => session.acknowledgeOperation(s).pipe(Effect.ignore), { discard: true })
            default:
              return Effect.void
          }
        })
      )
      const ticker = lock.withPermit(core.converge).pipe(Effect.repeat({ schedule: Schedule.spaced("200 millis") }))
      leading = { core, lock }
      const stop = yield* Effect.callback<void>((resume) => {
        abdicateNow = () => resume(Effect.void)
      }).pipe(Effect.forkScoped)
      yield* Effect.addFinalizer(() => Effect.sync(() => {
        leading = undefined
        abdicateNow = undefined
      }))
      yield* Effect.raceAll([
        leadership.lost.pipe(Effect.andThen(Effect.logWarning("marathon-like: leadership lost"))),
        loop.pipe(
          Effect.catchTag("FrameworkRemoved", (e) =>
            Effect.gen(function*() {
              gone = new FrameworkGone({ frameworkId: e.frameworkId || frameworkId || storedId || "(unknown)", reason: e.message, store: storeUrl.replace(/\?.*$/, "") })
              yield* Effect.logError(`marathon-like: ${gone.message}`)
              yield* Deferred.fail(stopped, gone)
            })),
          Effect.catchCause((cause) => Effect.logError("marathon-like: the scheduler session ended", cause))
        ),
        ticker.pipe(Effect.asVoid),
        Fiber.join(stop)
      ])
    }))

    yield* lead.pipe(
      Effect.provideService(StateStore.StateStore, store),
      Effect.catchCause((cause) => Effect.logError("marathon-like: leading failed", cause)),
      Effect.andThen(Effect.sleep("500 millis")),
      // Once the framework is gone there is nothing to lead: stop campaigning (the scope that
      // held the election key is closed, so another instance may try, and will stop the same way).
      Effect.repeat({ while: () => gone === undefined }),
      Effect.forkScoped
    )

    return { url: self, port, isLeader: () => leading !== undefined, stopped: Deferred.await(stopped) }
  })

/**
 * Deletes the stored framework id, so the next leader subscribes as a new framework (after the
 * master removed the old one: see {@link FrameworkGone}). Apps, versions and instances stay.
 * Answers whether there was an id to delete.
 *
 * @since 0.1.0
 * @category constructors
 */
export const forgetFramework = (storeUrl: string): Effect.Effect<boolean, StoreError.StoreError | StoreError.InvalidStoreUrl | StoreError.VersionConflict, Scope.Scope> =>
  Effect.gen(function*() {
    const store = yield* StateStore.make(Layer.provide(StateStore.layerNamespace("marathon-like/"), StateStore.layerFromUrl(storeUrl)))
    return yield* store.delete(KEYS.frameworkId)
  })

// ---------------------------------------------------------------------------------------- helpers

const GZIP_MIN_BYTES = 16 * 1024
const gzipAsync = promisify(zlib.gzip)
/** The gzip form of a cached answer, made once; dropped with the answer (weakly held). */
const zipped = new WeakMap<Buffer, Promise<Buffer>>()
const gzipOnce = (raw: Buffer): Promise<Buffer> => {
  let z = zipped.get(raw)
  if (z === undefined) zipped.set(raw, (z = gzipAsync(raw, { level: 1 })))
  return z
}

const acceptsGzip = (header: string | undefined): boolean =>
  header !== undefined && header.split(",").some((token) => {
    const [coding, ...params] = token.split(";").map((p) => p.trim().toLowerCase())
    const q = params.find((p) => p.startsWith("q="))
    return coding === "gzip" && (q === undefined || Number(q.slice(2)) > 0)
  })

const ifNoneMatch = (header: string | undefined, etag: string): boolean =>
  header !== undefined && (header.trim() === "*" || header.split(",").some((t) => t.trim().replace(/^W\//, "") === etag))

const send = (res: http.ServerResponse, status: number, body: unknown, headers?: Record<string, string>) =>
  sendRaw(res, status, JSON.stringify(body), headers)

const sendRaw = (res: http.ServerResponse, status: number, text: string | Buffer, headers?: Record<string, string>) => {
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(text), ...headers })
  res.end(text)
}

const sendText = (res: http.ServerResponse, status: number, text: string) => {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8" })
  res.end(text)
}

const readBody = (req: http.IncomingMessage, limit: number): Promise<Buffer | "too-large"> =>
  new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? NaN)
    if (Number.isFinite(declared) && declared > limit) {
      req.resume()
      return resolve("too-large")
    }
    const chunks: Array<Buffer> = []
    let size = 0
    let over = false
    req.on("data", (c: Buffer) => {
      if (over) return
      size += c.length
      if (size > limit) {
        over = true
        chunks.length = 0
        resolve("too-large")
        return
      }
      chunks.push(c)
    })
    req.on("end", () => {
      if (!over) resolve(Buffer.concat(chunks))
    })
    req.on("error", reject)
  })

/** Forwards the request to the leader and streams the answer back (also the event stream). */
const proxy = (req: http.IncomingMessage, res: http.ServerResponse, leader: string): Promise<void> =>
  new Promise((resolve) => {
    const target = new URL(req.url ?? "/", leader)
    const upstream = http.request(target, { method: req.method, headers: { ...req.headers, host: target.host, "x-marathon-via": "follower" } }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(res)
      answer.on("end", () => resolve())
    })
    upstream.on("error", (e) => {
      if (!res.headersSent) send(res, 502, { message: `Could not reach the leader at ${leader}: ${e.message}` })
      resolve()
    })
    res.on("close", () => upstream.destroy())
    req.pipe(upstream)
  })

