/**
 * The operator surface every Berth service framework mounts, so that every one is operated the
 * same way: plans and their controls, pods (status, restart, replace), the stored state, the
 * offer manager's "why is this not running" records, and Prometheus metrics.
 *
 * | Method | Path | What |
 * | --- | --- | --- |
 * | GET | `/v1/plans` | every plan's status, phases and steps |
 * | GET | `/v1/plans/{plan}` | one plan |
 * | POST | `/v1/plans/{plan}/{start,stop,pause,resume,force-complete,restart}` | plan controls (body below) |
 * | GET | `/v1/pods` | every pod instance's status |
 * | GET | `/v1/pods/{instance}` | one instance, with its why-not record while its launch is pending |
 * | POST | `/v1/pods/{instance}/{restart,replace}` | restart in place / replace elsewhere |
 * | GET | `/v1/state` | framework id, target configuration id and spec, uninstall status |
 * | GET | `/v1/debug/offers` | queued offers, holds, counters, a why-not record per pending launch |
 * | GET | `/metrics` | Prometheus text format |
 *
 * A plan command's body is optional JSON: `{"parameters": {"KEY": "value"}}` for `start` (the
 * custom plan's declared parameters), `{"phase": "...", "step": "..."}` to aim `pause`, `resume`,
 * `force-complete` or `restart` at one phase or step. Errors are JSON `{ "error", "path", "rule" }`:
 * an unknown plan, phase, step or pod is a 404; a bad action, body or parameter a 400.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { OperatorHttp, ServiceScheduler } from "@berth/sdk-scheduler"
 *
 * // Serve the operator API on port 8080 next to the service runtime.
 * const Live = OperatorHttp.layer({ port: 8080 }).pipe(Layer.provideMerge(ServiceScheduler.layerStack(options)))
 * const program = Effect.gen(function*() {
 *   const http = yield* OperatorHttp.OperatorHttp
 *   yield* Effect.log(`operator API on ${http.url}`) // curl $url/v1/plans/deploy
 * })
 * ```
 *
 * @since 0.1.0
 */
import type { Scope } from "effect"
import { Cause, Context, Effect, Layer, Schema } from "effect"
import * as http from "node:http"
import * as Prometheus from "prom-client"
import * as ServiceScheduler from "./ServiceScheduler.ts"

/**
 * A `node:http` request handler serving the operator API. Mount it on a server of your own, or
 * let {@link layer} serve it.
 *
 * @since 0.1.0
 * @category models
 */
export type Handler = (request: http.IncomingMessage, response: http.ServerResponse) => void

/**
 * The operator API, being served.
 *
 * @since 0.1.0
 * @category services
 */
export class OperatorHttp extends Context.Service<OperatorHttp, {
  readonly host: string
  readonly port: number
  /** `http://host:port`. */
  readonly url: string
  readonly handler: Handler
}>()("@berth/sdk-scheduler/OperatorHttp") {}

/**
 * The operator API could not listen (the port is taken, the host is not local...).
 *
 * @since 0.1.0
 * @category errors
 */
export class OperatorHttpError extends Schema.TaggedError<OperatorHttpError>()("OperatorHttpError", {
  reason: Schema.String
}) {
  override get message(): string {
    return `operator API: ${this.reason}`
  }
}

/** @since 0.1.0 @category models */
export const PLAN_ACTIONS = ["start", "stop", "pause", "resume", "force-complete", "restart"] as const
/** @since 0.1.0 @category models */
export const POD_ACTIONS = ["restart", "replace"] as const

interface Reply {
  readonly status: number
  readonly body: unknown
  readonly contentType?: string | undefined
}

const json = (status: number, body: unknown): Reply => ({ status, body })
const problem = (status: number, path: string, rule: string): Reply => json(status, { error: `${path}: ${rule}`, path, rule })

/** An operator command's failure, as the HTTP reply it becomes. */
class Rejected extends Error {
  readonly reply: Reply
  constructor(reply: Reply) {
    super("rejected")
    this.reply = reply
  }
}
const reject = (status: number, path: string, rule: string) => Effect.die(new Rejected(problem(status, path, rule)))

const readBody = (request: http.IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    let size = 0
    request.on("data", (chunk: Buffer) => {
      size += chunk.length
      // An operator command is a few hundred bytes; refuse to buffer anything large.
      if (size > 64 * 1024) {
        reject(new Rejected(problem(413, "body", "must be at most 64 KiB")))
        request.destroy()
      } else chunks.push(chunk)
    })
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    request.on("error", reject)
  })

interface Command {
  readonly parameters?: Readonly<Record<string, string>> | undefined
  readonly phase?: string | undefined
  readonly step?: string | undefined
}

/** Parses a plan command's body, naming the field and the rule of anything wrong. */
const parseCommand = (text: string): Effect.Effect<Command> =>
  Effect.gen(function*() {
    if (text.trim() === "") return {}
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch (error) {
      return yield* reject(400, "body", `must be JSON (${(error as Error).message})`)
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) return yield* reject(400, "body", "must be a JSON object")
    const body = value as Record<string, unknown>
    for (const key of Object.keys(body)) {
      if (key !== "parameters" && key !== "phase" && key !== "step") {
        return yield* reject(400, `body.${key}`, "unknown field (allowed: parameters, phase, step)")
      }
    }
    for (const key of ["phase", "step"] as const) {
      if (body[key] !== undefined && (typeof body[key] !== "string" || body[key] === "")) {
        return yield* reject(400, `body.${key}`, "must be a non-empty string")
      }
    }
    if (body.step !== undefined && body.phase === undefined) return yield* reject(400, "body.step", "needs body.phase")
    const parameters = body.parameters
    if (parameters !== undefined) {
      if (typeof parameters !== "object" || parameters === null || Array.isArray(parameters)) {
        return yield* reject(400, "body.parameters", "must be an object of strings")
      }
      for (const [k, v] of Object.entries(parameters)) {
        if (typeof v !== "string") return yield* reject(400, `body.parameters.${k}`, "must be a string")
      }
    }
    return {
      parameters: parameters as Record<string, string> | undefined,
      phase: body.phase as string | undefined,
      step: body.step as string | undefined
    }
  })

/** Builds the Prometheus registry, filled from the runtime at every scrape. */
const makeMetrics = (service: ServiceScheduler.Service) => {
  const registry = new Prometheus.Registry()
  const gauge = (name: string, help: string, labelNames: ReadonlyArray<string> = []) =>
    new Prometheus.Gauge({ name, help, labelNames, registers: [registry] })
  const counters = {
    offersReceived: gauge("berth_service_offers_received_total", "Offers the offer manager received"),
    offersAccepted: gauge("berth_service_offers_accepted_total", "Offers used by an Accept"),
    declinedShort: gauge("berth_service_offers_declined_short_total", "Offers declined with the short filter (work pending)"),
    declinedLong: gauge("berth_service_offers_declined_long_total", "Offers declined with the long filter (idle)"),
    rescinded: gauge("berth_service_offers_rescinded_total", "Offers the master took back"),
    expired: gauge("berth_service_offers_expired_total", "Offers that expired in the queue"),
    revives: gauge("berth_service_revives_total", "Revive calls"),
    suppresses: gauge("berth_service_suppresses_total", "Suppress calls"),
    evaluations: gauge("berth_service_offer_evaluations_total", "Offer x requirement evaluations")
  } as const
  const suppressed = gauge("berth_service_offers_suppressed", "1 while offers are suppressed")
  const queued = gauge("berth_service_offers_queued", "Offers queued, not yet used or declined")
  const pending = gauge("berth_service_launches_pending", "Launches waiting for an offer")
  const pods = gauge("berth_service_pods", "Pod instances by the state of their latest task", ["state"])
  const ready = gauge("berth_service_pods_ready", "Pod instances RUNNING and ready")
  const plans = gauge("berth_service_plan_status", "1 for each plan's current status", ["plan", "status"])
  const collect = Effect.gen(function*() {
    const snapshot = yield* service.offers
    for (const [key, metric] of Object.entries(counters)) metric.set(snapshot.counters[key as keyof typeof counters])
    suppressed.set(snapshot.suppressed ? 1 : 0)
    queued.set(snapshot.queuedOffers.length)
    pending.set(snapshot.pending.length)
    const all = yield* service.pods
    pods.reset()
    const byState = new Map<string, number>()
    for (const p of all) byState.set(p.state ?? "NONE", (byState.get(p.state ?? "NONE") ?? 0) + 1)
    for (const [state, n] of byState) pods.set({ state }, n)
    ready.set(all.filter((p) => p.state === "RUNNING" && p.ready === true).length)
    plans.reset()
    for (const v of yield* service.plans) plans.set({ plan: v.name, status: v.status }, 1)
    return yield* Effect.promise(() => registry.metrics())
  })
  return { collect, contentType: registry.contentType }
}

/**
 * Makes the operator API's request handler over the service runtime.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { OperatorHttp } from "@berth/sdk-scheduler"
 * import * as http from "node:http"
 *
 * // Mount it under a server of your own.
 * const serve = Effect.gen(function*() {
 *   const handler = yield* OperatorHttp.makeHandler
 *   http.createServer(handler).listen(8080)
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeHandler: Effect.Effect<Handler, never, ServiceScheduler.ServiceScheduler> = Effect.gen(function*() {
  const service = yield* ServiceScheduler.ServiceScheduler
  const context = yield* Effect.context<never>()
  const metrics = makeMetrics(service)

  const plan = (name: string) =>
    Effect.flatMap(service.plans, (views) => {
      const view = views.find((v) => v.name === name)
      return view === undefined ? reject(404, `plans.${name}`, `no such plan (known: ${views.map((v) => v.name).join(", ")})`) : Effect.succeed(view)
    })

  const planCommand = (name: string, action: string, command: Command) =>
    Effect.gen(function*() {
      if (!(PLAN_ACTIONS as ReadonlyArray<string>).includes(action)) {
        return yield* reject(400, "action", `must be one of ${PLAN_ACTIONS.join(", ")} (got ${JSON.stringify(action)})`)
      }
      yield* plan(name)
      if (action !== "start" && command.parameters !== undefined) {
        return yield* reject(400, "body.parameters", "only start takes parameters")
      }
      if ((action === "start" || action === "stop") && command.phase !== undefined) {
        return yield* reject(400, "body.phase", `${action} applies to a whole plan; only pause, resume, force-complete and restart take a phase or step`)
      }
      const target = { plan: name, phase: command.phase, step: command.step }
      switch (action) {
        case "start":
          yield* service.startPlan(name, command.parameters)
          break
        case "stop":
          yield* service.stopPlan(name)
          break
        case "pause":
          yield* service.pause(target)
          break
        case "resume":
          yield* service.resume(target)
          break
        case "force-complete":
          yield* service.forceComplete(target)
          break
        case "restart":
          yield* service.restartPlan(target)
          break
      }
      return json(200, yield* service.plan(name))
    })

  const pod = (instance: string) =>
    Effect.flatMap(service.pods, (pods) => {
      const found = pods.find((p) => p.instance === instance)
      return found === undefined ? reject(404, `pods.${instance}`, `no such pod instance (known: ${pods.map((p) => p.instance).join(", ") || "none"})`) : Effect.succeed(found)
    })

  const route = (method: string, segments: ReadonlyArray<string>, body: string): Effect.Effect<Reply, unknown> =>
    Effect.gen(function*() {
      const [a, b, c, d, ...rest] = segments
      const get = method === "GET" || method === "HEAD"
      const needs = (wanted: "GET" | "POST") =>
        (wanted === "GET" ? get : method === "POST") ? Effect.void : Effect.die(new Rejected(problem(405, "method", `${method} not allowed here; use ${wanted}`)))
      if (rest.length > 0) return problem(404, "path", "no such endpoint")
      if (a === "metrics" && b === undefined) {
        yield* needs("GET")
        return { status: 200, body: yield* metrics.collect, contentType: metrics.contentType }
      }
      if (a !== "v1") return problem(404, "path", "no such endpoint (see /v1/plans, /v1/pods, /v1/state, /v1/debug/offers, /metrics)")
      switch (b) {
        case "plans":
          if (c === undefined) return yield* Effect.andThen(needs("GET"), Effect.map(service.plans, (v) => json(200, v)))
          if (d === undefined) return yield* Effect.andThen(needs("GET"), Effect.map(plan(c), (v) => json(200, v)))
          yield* needs("POST")
          return yield* planCommand(c, d, yield* parseCommand(body))
        case "pods":
          if (c === undefined) return yield* Effect.andThen(needs("GET"), Effect.map(service.pods, (v) => json(200, v)))
          if (d === undefined) {
            yield* needs("GET")
            const status = yield* pod(c)
            const whyNot = yield* service.whyNot(c)
            return json(200, { ...status, whyNot: whyNot._tag === "Some" ? whyNot.value : undefined })
          }
          yield* needs("POST")
          if (!(POD_ACTIONS as ReadonlyArray<string>).includes(d)) {
            return problem(400, "action", `must be one of ${POD_ACTIONS.join(", ")} (got ${JSON.stringify(d)})`)
          }
          yield* pod(c)
          yield* (d === "restart" ? service.restartPod(c) : service.replacePod(c))
          return json(200, { pod: c, action: d, accepted: true })
        case "state":
          if (c !== undefined) break
          yield* needs("GET")
          return json(200, yield* service.state)
        case "debug":
          if (c !== "offers" || d !== undefined) break
          yield* needs("GET")
          return json(200, yield* service.offers)
      }
      return problem(404, "path", "no such endpoint (see /v1/plans, /v1/pods, /v1/state, /v1/debug/offers, /metrics)")
    })

  /** Every failure becomes a JSON reply: the command's own errors keep their path and rule. */
  const toReply = (cause: Cause.Cause<unknown>): Reply => {
    const defect = Cause.squash(cause)
    if (defect instanceof Rejected) return defect.reply
    const error = defect as { readonly _tag?: string; readonly path?: string; readonly rule?: string; readonly message?: string }
    switch (error?._tag) {
      case "ServiceCommandError": {
        const path = error.path ?? ""
        // An unknown plan, phase, step or pod is "not found"; anything else a bad request.
        return problem(/^(plans|pods)\./.test(path) && /no such/.test(error.rule ?? "") ? 404 : 400, path, error.rule ?? "")
      }
      case "StoreError":
        return json(503, { error: `state store unavailable: ${error.message}` })
      default:
        return json(500, { error: `internal error: ${error?.message ?? String(defect)}` })
    }
  }

  const run = Effect.runPromiseWith(context)
  return (request, response) => {
    const url = new URL(request.url ?? "/", "http://operator")
    const segments = url.pathname.split("/").filter((s) => s !== "").map((s) => decodeURIComponent(s))
    const method = request.method ?? "GET"
    const send = (reply: Reply) => {
      if (response.headersSent) return
      const text = typeof reply.body === "string" && reply.contentType !== undefined ? reply.body : JSON.stringify(reply.body, null, 1)
      response.writeHead(reply.status, { "content-type": reply.contentType ?? "application/json; charset=utf-8" })
      response.end(method === "HEAD" ? undefined : text)
    }
    readBody(request)
      .then((body) => run(Effect.catchCause(route(method, segments, body), (cause) => Effect.succeed(toReply(cause)))))
      .then(send, (error: unknown) => send(error instanceof Rejected ? error.reply : json(500, { error: String(error) })))
  }
})

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Default 0: any free port (read it from {@link OperatorHttp}). */
  readonly port?: number | undefined
  /** Default `127.0.0.1`. */
  readonly host?: string | undefined
}

const listen = (handler: Handler, host: string, port: number): Effect.Effect<number, OperatorHttpError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<http.Server, OperatorHttpError>((resume) => {
      const server = http.createServer(handler)
      server.once("error", (error) => resume(Effect.fail(new OperatorHttpError({ reason: `cannot listen on ${host}:${port}: ${error.message}` }))))
      server.listen(port, host, () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.callback<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map((server) => (server.address() as { port: number }).port))

/**
 * Serves the operator API on a port for as long as the layer lives.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { OperatorHttp, ServiceScheduler } from "@berth/sdk-scheduler"
 *
 * const Live = OperatorHttp.layer({ port: 8080 }).pipe(Layer.provideMerge(ServiceScheduler.layerStack(options)))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<OperatorHttp, OperatorHttpError, ServiceScheduler.ServiceScheduler> =>
  Layer.effect(
    OperatorHttp,
    Effect.gen(function*() {
      const host = options.host ?? "127.0.0.1"
      const port = options.port ?? 0
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        return yield* new OperatorHttpError({ reason: `port: must be an integer from 0 to 65535 (got ${port})` })
      }
      const handler = yield* makeHandler
      const bound = yield* listen(handler, host, port)
      const shown = host.includes(":") ? `[${host}]` : host
      return { host, port: bound, url: `http://${shown}:${bound}`, handler }
    })
  )
