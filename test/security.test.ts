import { describe, expect, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import { Agent, Master, Security } from "@berth/cluster-core"
import { Resources, v1 } from "@berth/proto"
import { SchedulerSession } from "@berth/sdk-scheduler"
import { StateStore } from "@berth/storage"
import { Certificates, TestCluster } from "@berth/testkit"
import { Context, Effect, Exit, Layer, Option, References, Stream } from "effect"
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Framework from "./support/framework.ts"

/**
 * TLS, mutual TLS, authentication, authorisation and rate limits on the master's gRPC port, with
 * real clients on 127.0.0.1. Every refusal is checked for its status, its `berth-reason` trailer
 * and the field it names, and for having changed nothing.
 */

interface Outcome {
  readonly code: string
  readonly reason: string
  readonly field: string
  readonly message: string
  readonly retryAfterMs: number
}

const ok: Outcome = { code: "OK", reason: "", field: "", message: "", retryAfterMs: 0 }

const outcomeOf = (error: grpc.ServiceError): Outcome => ({
  code: grpc.status[error.code] ?? String(error.code),
  reason: String(error.metadata?.get("berth-reason")[0] ?? ""),
  field: String(error.metadata?.get("berth-field")[0] ?? ""),
  message: error.details,
  retryAfterMs: Number(error.metadata?.get("berth-retry-after-ms")[0] ?? 0)
})

type UnaryMethod<Req> = (request: Req, callback: (error: grpc.ServiceError | null) => void) => unknown

const unary = <Req>(invoke: UnaryMethod<Req>, request: Req) =>
  Effect.callback<Outcome>((resume) => {
    invoke(request, (error) => resume(Effect.succeed(error === null ? ok : outcomeOf(error))))
  })

/** Opens a server stream and reports its first answer: data (OK, then cancelled) or an error. */
const firstOf = (open: () => grpc.ClientReadableStream<unknown>) =>
  Effect.callback<Outcome>((resume) => {
    let done = false
    const finish = (outcome: Outcome) => {
      if (done) return
      done = true
      resume(Effect.succeed(outcome))
    }
    const call = open()
    call.on("data", () => {
      finish(ok)
      call.cancel()
    })
    call.on("error", (error: grpc.ServiceError) => finish(outcomeOf(error)))
  })

/** An agent's Connect stream: registers, and reports REGISTERED (with the agent id) or the error. */
const connectAgent = (client: v1.AgentServiceClient) =>
  Effect.callback<Outcome & { readonly agentId: string }>((resume) => {
    let done = false
    const call = client.connect()
    call.on("data", (response: v1.ConnectResponse) => {
      if (done || response.message?.$case !== "registered") return
      done = true
      resume(Effect.succeed({ ...ok, agentId: response.message.value.agentId }))
    })
    call.on("error", (error: grpc.ServiceError) => {
      if (done) return
      done = true
      resume(Effect.succeed({ ...outcomeOf(error), agentId: "" }))
    })
    call.write({
      message: {
        $case: "register",
        value: v1.ConnectRequest_Register.create({
          agentInfo: v1.AgentInfo.create({ hostname: "raw-agent", resources: [Resources.scalar("cpus", 1), Resources.scalar("mem", 512)] })
        })
      }
    })
    return Effect.sync(() => call.cancel())
  })

/** Raw clients of every master service, with the given TLS and credentials; closed with the scope. */
const clients = (address: string, tls?: Security.ClientTls, credentials?: Security.ClientCredentials) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const channel = Security.channelCredentials(tls)
      const options = Security.clientOptions(credentials)
      const scheduler = new v1.SchedulerServiceClient(address, channel, options)
      const operator = new v1.OperatorServiceClient(address, channel, options)
      const agent = new v1.AgentServiceClient(address, channel, options)
      return {
        agent,
        subscribe: (frameworkInfo: Partial<v1.FrameworkInfo>) =>
          firstOf(() => scheduler.subscribe({ frameworkInfo: v1.FrameworkInfo.create({ name: "raw", ...frameworkInfo }), suppressedRoles: [] })),
        accept: (request: Partial<v1.AcceptRequest>) => unary(scheduler.accept.bind(scheduler) as UnaryMethod<v1.AcceptRequest>, v1.AcceptRequest.create(request)),
        getState: unary(operator.getState.bind(operator) as UnaryMethod<v1.GetStateRequest>, {}),
        getMaster: unary(operator.getMaster.bind(operator) as UnaryMethod<v1.GetMasterRequest>, {}),
        drainAgent: (agentId: string) =>
          unary(operator.drainAgent.bind(operator) as UnaryMethod<v1.DrainAgentRequest>, { agentId, markGone: false }),
        markAgentGone: (agentId: string) =>
          unary(operator.markAgentGone.bind(operator) as UnaryMethod<v1.MarkAgentGoneRequest>, { agentId }),
        updateWeights: unary(operator.updateWeights.bind(operator) as UnaryMethod<v1.UpdateWeightsRequest>, { role: "web", weight: 5 }),
        watchEvents: firstOf(() => operator.watchEvents({})),
        close: () => (scheduler.close(), operator.close(), agent.close())
      }
    }),
    (c) => Effect.sync(c.close)
  )

/** A scheduler session that must fail: the error its events end with. */
const sessionError = (options: SchedulerSession.Options) =>
  Effect.scoped(
    Effect.gen(function*() {
      const context = yield* Layer.build(SchedulerSession.layer(options))
      const session = Context.get(context, SchedulerSession.SchedulerSession)
      return yield* Effect.flip(Stream.runDrain(session.events))
    })
  ).pipe(Effect.timeoutOrElse({ duration: "10 seconds", orElse: () => Effect.die("the session did not fail") }))

const op = (operationId: string, kind: v1.Operation["kind"]): v1.Operation => ({ operationId, kind })
const reservedFor = (role: string, r: v1.Resource): v1.Resource => ({
  ...r,
  reservations: [{ type: v1.ReservationInfo_Type.DYNAMIC, role, principal: "", labels: { labels: [] } }]
})

const quiet = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provideService(effect, References.MinimumLogLevel, "Error")

describe("transport security", () => {
  it.live("TLS: a plaintext client and a client trusting another CA are refused; TLS clients work", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 0, tls: true })
      const plain = yield* clients(cluster.master)
      expect((yield* plain.getState).code).toBe("UNAVAILABLE")
      expect((yield* plain.subscribe({ name: "plaintext" })).code).toBe("UNAVAILABLE")
      const foreign = yield* Certificates.generate(path.join(cluster.workDir, "foreign"), "foreign")
      const stranger = yield* clients(cluster.master, { ca: foreign.ca })
      expect((yield* stranger.getState).code).toBe("UNAVAILABLE")

      // The testkit's operator client and the SDK's session speak TLS with the cluster's CA.
      const before = yield* cluster.operator.state
      expect(before.master?.leading).toBe(true)
      expect(before.frameworks).toEqual([])
      const framework = yield* Framework.open(cluster.master, "tls-fw", {}, { tls: cluster.security.tls })
      const after = yield* cluster.operator.state
      expect(after.frameworks.map((f) => f.info?.frameworkId)).toEqual([framework.frameworkId])
    }).pipe(quiet), 20_000)

  it.live("mutual TLS: a client without a certificate, or with one from another CA, is refused; with one it works", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 0, tls: "mutual" })
      const tls = cluster.security.tls!
      expect(tls.cert).toBeDefined()
      const noCertificate = yield* clients(cluster.master, { ca: tls.ca })
      expect((yield* noCertificate.getState).code).toBe("UNAVAILABLE")
      expect((yield* noCertificate.subscribe({ name: "no-cert" })).code).toBe("UNAVAILABLE")
      const foreign = yield* Certificates.generate(path.join(cluster.workDir, "foreign"), "foreign")
      const foreignCertificate = yield* clients(cluster.master, { ca: tls.ca, cert: foreign.client.cert, key: foreign.client.key })
      expect((yield* foreignCertificate.getState).code).toBe("UNAVAILABLE")

      const withCertificate = yield* clients(cluster.master, tls)
      expect(yield* withCertificate.getState).toEqual(ok)
      expect((yield* cluster.operator.state).frameworks).toEqual([])
      const framework = yield* Framework.open(cluster.master, "mtls-fw", {}, { tls })
      expect((yield* cluster.operator.state).frameworks.map((f) => f.info?.frameworkId)).toEqual([framework.frameworkId])
    }).pipe(quiet), 20_000)

  it.live("a whole secured cluster: agents register over mutual TLS as agent principals, a framework launches a task", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2, tls: "mutual", authentication: true })
      const state = yield* cluster.operator.state
      expect(state.agents).toHaveLength(2)
      const framework = yield* Framework.open(cluster.master, "secured", {}, {
        tls: cluster.security.tls,
        credentials: cluster.security.credentials!.framework
      })
      const offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        Framework.launch([v1.TaskInfo.create({ taskId: "secured", resources: [Resources.scalar("cpus", 0.1)], command: { shell: true, value: "echo ok" } })])
      ])
      yield* framework.awaitState("secured", v1.TaskState.FINISHED)
      // An agent without the agent principal's credentials is refused, even with the right certificate.
      const rogue = yield* Effect.flip(Agent.start({
        master: cluster.master,
        workDir: path.join(cluster.workDir, "rogue"),
        resources: "cpus:1;mem:128",
        tls: cluster.security.tls!
      }).pipe(Effect.flatMap((a) => a.registered), Effect.timeout("2 seconds")))
      expect(rogue._tag).toBe("TimeoutError")
      expect((yield* cluster.operator.state).agents).toHaveLength(2)
    }).pipe(quiet), 30_000)

  it.live("authentication and authorisation: refused calls name the reason and the field, and change nothing", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({
        agents: 1,
        agentResources: "cpus:2;mem:1024;disk:1024",
        // Agents cannot authenticate yet; everyone else must.
        authentication: { agents: false },
        principals: [
          { principal: "web-fw", kind: "framework", secret: "web-secret" },
          { principal: "token-fw", kind: "framework", token: "token-fw-token" },
          { principal: "viewer", kind: "operator", secret: "viewer-secret" }
        ],
        acls: {
          frameworks: [
            { principal: "framework", roles: ["batch", "web"], reserveRoles: ["web"] },
            { principal: "web-fw", roles: ["web"] },
            { principal: "token-fw", roles: ["*"] }
          ],
          operators: [{ principal: "operator", access: "full" }, { principal: "viewer", access: "read" }]
        }
      })
      const credentials = cluster.security.credentials!
      const agentId = cluster.agents[0]!.agentId
      const anonymous = yield* clients(cluster.master)
      const wrongSecret = yield* clients(cluster.master, undefined, { principal: "framework", secret: "not-the-secret" })
      const unknownPrincipal = yield* clients(cluster.master, undefined, { principal: "nobody", secret: "x" })
      const unknownToken = yield* clients(cluster.master, undefined, { token: "no-such-token" })
      const fw = yield* clients(cluster.master, undefined, credentials.framework)
      const operator = yield* clients(cluster.master, undefined, credentials.operator)
      const viewer = yield* clients(cluster.master, undefined, { principal: "viewer", secret: "viewer-secret" })

      const unauthenticated: Array<[string, Effect.Effect<Outcome>]> = [
        ["Subscribe without credentials", anonymous.subscribe({ name: "anon" })],
        ["Subscribe with a wrong secret", wrongSecret.subscribe({ name: "wrong" })],
        ["Subscribe as an unknown principal", unknownPrincipal.subscribe({ name: "nobody" })],
        ["Subscribe with an unknown token", unknownToken.subscribe({ name: "token" })],
        ["Accept without credentials", anonymous.accept({ session: { frameworkId: "x", streamId: "y" }, offerIds: ["o"] })],
        ["GetState without credentials", anonymous.getState],
        ["GetMaster without credentials", anonymous.getMaster],
        ["WatchEvents without credentials", anonymous.watchEvents],
        ["GetState with a wrong secret", wrongSecret.getState],
        ["DrainAgent with an unknown token", unknownToken.drainAgent(agentId)]
      ]
      for (const [name, attempt] of unauthenticated) {
        const outcome = yield* attempt
        expect(outcome.code, name).toBe("UNAUTHENTICATED")
        expect(outcome.reason, name).toBe("unauthenticated")
      }

      const denied: Array<[string, Effect.Effect<Outcome>, string, RegExp]> = [
        ["Subscribe with a role the principal may not use", fw.subscribe({ name: "roles", roles: ["batch", "db"] }), "frameworkInfo.roles[1]", /principal "framework" may not subscribe with role "db" \(its roles: batch, web\)/],
        ["Subscribe claiming another principal", fw.subscribe({ name: "claim", principal: "web-fw", roles: ["web"] }), "frameworkInfo.principal", /"web-fw" is not the authenticated principal "framework"/],
        ["Subscribe as an operator principal", operator.subscribe({ name: "op", roles: ["web"] }), "Subscribe", /operator principal; scheduler calls need a framework principal/],
        ["DrainAgent as a framework principal", fw.drainAgent(agentId), "DrainAgent", /is a framework principal; DrainAgent is an operator call/],
        ["MarkAgentGone as a framework principal", fw.markAgentGone(agentId), "MarkAgentGone", /operator call/],
        ["UpdateWeights as a framework principal", fw.updateWeights, "UpdateWeights", /operator call/],
        ["GetState as a framework principal", fw.getState, "GetState", /operator call/],
        ["WatchEvents as a framework principal", fw.watchEvents, "WatchEvents", /operator call/],
        ["DrainAgent as a read-only operator", viewer.drainAgent(agentId), "DrainAgent", /read access only; DrainAgent needs access "full"/],
        ["UpdateWeights as a read-only operator", viewer.updateWeights, "UpdateWeights", /read access only/]
      ]
      for (const [name, attempt, field, rule] of denied) {
        const outcome = yield* attempt
        expect(outcome.code, name).toBe("PERMISSION_DENIED")
        expect(outcome.reason, name).toBe("unauthorized")
        expect(outcome.field, name).toBe(field)
        expect(outcome.message, name).toMatch(rule)
      }
      // Reads are open to read-only operators; writes get past authorisation for full operators
      // (an unknown agent is the first thing wrong with this drain).
      expect(yield* viewer.getState).toEqual(ok)
      expect(yield* viewer.watchEvents).toEqual(ok)
      expect(yield* fw.getMaster).toEqual(ok)
      expect((yield* operator.drainAgent("no-such-agent")).code).toBe("NOT_FOUND")

      // The SDK reports both kinds of refusal as their own errors and stops.
      const badSecret = yield* sessionError({
        master: cluster.master,
        framework: { name: "sdk-wrong" },
        credentials: { principal: "framework", secret: "nope" }
      })
      expect(badSecret._tag).toBe("Unauthenticated")
      const badRole = yield* sessionError({
        master: cluster.master,
        framework: { name: "sdk-role", roles: ["db"] },
        credentials: credentials.framework
      })
      expect(badRole).toMatchObject({ _tag: "PermissionDenied", field: "frameworkInfo.roles[0]" })

      // Nothing changed: no framework, the agent active and undrained, no weights set.
      const state = yield* cluster.operator.state
      expect(state.frameworks).toEqual([])
      expect(state.tasks).toEqual([])
      expect(state.agents.map((a) => [a.info?.agentId, a.state])).toEqual([[agentId, v1.Agent_State.ACTIVE]])
      expect((yield* cluster.operator.getWeights).weights.filter((w) => w.weight !== 1)).toEqual([])

      // Reservations: a principal allowed to subscribe with "batch" but to reserve only for "web".
      const reservedRoles = Effect.map(cluster.operator.state, (s) =>
        s.agents.flatMap((a) => a.info?.resources ?? []).flatMap((r) => r.reservations.map((x) => x.role)))
      yield* Effect.scoped(Effect.gen(function*() {
        const batch = yield* Framework.open(cluster.master, "batch-fw", { roles: ["batch"] }, { credentials: credentials.framework })
        const offer = yield* batch.nextOffer
        expect(offer.allocationRole).toBe("batch")
        const cases: Array<[Array<v1.Operation>, string, RegExp]> = [
          [[op("r1", { $case: "reserve", value: { resources: [reservedFor("db", Resources.scalar("cpus", 0.5))] } })], "operations[0].reserve.resources[0].reservations[0].role", /principal "framework" may not reserve resources for role "db" \(its reserveRoles: web\)/],
          [[op("r2", { $case: "reserve", value: { resources: [reservedFor("batch", Resources.scalar("cpus", 0.5))] } })], "operations[0].reserve.resources[0].reservations[0].role", /may not reserve resources for role "batch"/],
          [[op("", { $case: "unreserve", value: { resources: [reservedFor("batch", Resources.scalar("cpus", 0.5))] } })], "operations[0].unreserve.resources[0].reservations[0].role", /may not unreserve resources for role "batch"/],
          [[op("", { $case: "create", value: { volumes: [reservedFor("batch", Resources.scalar("disk", 64))] } })], "operations[0].create.volumes[0].reservations[0].role", /may not create volumes for role "batch"/]
        ]
        for (const [operations, field, rule] of cases) {
          const error = yield* Effect.flip(batch.session.accept([offer.offerId], operations))
          expect(error._tag, error.message).toBe("PermissionDenied")
          if (error._tag !== "PermissionDenied") continue
          expect(error.field).toBe(field)
          expect(error.rule).toMatch(rule)
        }
        expect(yield* reservedRoles).toEqual([])
        expect(batch.operations).toEqual([])
        const state = yield* cluster.operator.state
        expect(state.frameworks.map((f) => f.info?.principal)).toEqual(["framework"])
      }))

      // A principal authorised for "web" reserves for it; another principal cannot take its framework over.
      const web = yield* Framework.open(cluster.master, "web-fw", { roles: ["web"] }, { credentials: { principal: "web-fw", secret: "web-secret" } })
      const offer = yield* web.nextOffer
      expect(offer.allocationRole).toBe("web")
      yield* web.session.accept([offer.offerId], [op("web-1", { $case: "reserve", value: { resources: [reservedFor("web", Resources.scalar("cpus", 0.5))] } })])
      expect(yield* reservedRoles).toEqual(["web"])
      const hijacker = yield* clients(cluster.master, undefined, { token: "token-fw-token" })
      const hijack = yield* hijacker.subscribe({ name: "web-fw", frameworkId: web.frameworkId, roles: ["*"] })
      expect(hijack).toMatchObject({ code: "PERMISSION_DENIED", reason: "unauthorized", field: "frameworkInfo.frameworkId" })
      expect(hijack.message).toMatch(/belongs to principal "web-fw", not "token-fw"/)
      const frameworks = (yield* cluster.operator.state).frameworks
      expect(frameworks.find((f) => f.info?.frameworkId === web.frameworkId)?.connected).toBe(true)
      // A bearer token authenticates too; the principal is filled in from it.
      const token = yield* Framework.open(cluster.master, "token-fw", { roles: ["*"] }, { credentials: { token: "token-fw-token" } })
      const tokenInfo = (yield* cluster.operator.state).frameworks.find((f) => f.info?.frameworkId === token.frameworkId)?.info
      expect(tokenInfo?.principal).toBe("token-fw")
    }).pipe(quiet), 30_000)

  it.live("agent authentication: an agent without agent credentials is refused; with them it registers", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 0, authentication: true })
      const credentials = cluster.security.credentials!
      const anonymous = yield* clients(cluster.master)
      const wrong = yield* clients(cluster.master, undefined, { principal: "agent", secret: "guess" })
      const framework = yield* clients(cluster.master, undefined, credentials.framework)
      expect(yield* connectAgent(anonymous.agent)).toMatchObject({ code: "UNAUTHENTICATED", reason: "unauthenticated" })
      expect(yield* connectAgent(wrong.agent)).toMatchObject({ code: "UNAUTHENTICATED", reason: "unauthenticated" })
      const asFramework = yield* connectAgent(framework.agent)
      expect(asFramework).toMatchObject({ code: "PERMISSION_DENIED", reason: "unauthorized", field: "Connect" })
      expect(asFramework.message).toMatch(/agents must authenticate as an agent principal/)
      expect((yield* cluster.operator.state).agents).toEqual([])

      const agent = yield* clients(cluster.master, undefined, credentials.agent)
      const registered = yield* connectAgent(agent.agent)
      expect(registered.code).toBe("OK")
      expect((yield* cluster.operator.state).agents.map((a) => a.info?.agentId)).toEqual([registered.agentId])
    }).pipe(quiet), 20_000)

  it.live("Subscribe and Revive storms are rate limited per principal, with a retry hint", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({
        agents: 0,
        authentication: { agents: false },
        principals: [{ principal: "other", kind: "framework", token: "other-token" }],
        // One token every two seconds, three at once: a storm of eight gets three through.
        master: { subscribeRate: { perSecond: 0.5, burst: 3 } }
      })
      const credentials = cluster.security.credentials!
      const fw = yield* clients(cluster.master, undefined, credentials.framework)
      const storm: Array<Outcome> = []
      for (let i = 0; i < 8; i++) storm.push(yield* fw.subscribe({ name: `storm-${i}` }))
      expect(storm.slice(0, 3)).toEqual([ok, ok, ok])
      for (const outcome of storm.slice(3)) {
        expect(outcome).toMatchObject({ code: "RESOURCE_EXHAUSTED", reason: "rate-limited" })
        expect(outcome.message).toMatch(/Subscribe: rate limit of 0.5\/s \(burst 3\) for principal "framework" exceeded; retry in \d+ ms/)
        expect(outcome.retryAfterMs).toBeGreaterThan(0)
        expect(outcome.retryAfterMs).toBeLessThanOrEqual(2000)
      }
      // The refused subscriptions registered nothing.
      expect((yield* cluster.operator.state).frameworks.map((f) => f.info?.name).sort()).toEqual(["storm-0", "storm-1", "storm-2"])

      // Another principal has its own bucket; its Revive storm is limited the same way.
      const other = yield* Framework.open(cluster.master, "other", {}, { credentials: { token: "other-token" } })
      const revives: Array<string> = []
      for (let i = 0; i < 5; i++) {
        const exit = yield* Effect.exit(other.session.revive())
        revives.push(Exit.isSuccess(exit) ? "ok" : Option.getOrThrow(Exit.findErrorOption(exit))._tag)
      }
      expect(revives).toEqual(["ok", "ok", "ok", "RateLimited", "RateLimited"])

      // The SDK treats the limit as a delay, not a refusal: with the bucket empty, it subscribes
      // once a token is back.
      const drained: Array<string> = []
      for (let i = 0; i < 5 && !drained.includes("RESOURCE_EXHAUSTED"); i++) drained.push((yield* fw.subscribe({ name: `drain-${i}` })).code)
      expect(drained).toContain("RESOURCE_EXHAUSTED")
      const patient = yield* Framework.open(cluster.master, "patient", {}, { credentials: credentials.framework })
      expect((yield* cluster.operator.state).frameworks.map((f) => f.info?.frameworkId)).toContain(patient.frameworkId)
    }).pipe(quiet), 20_000)
})

describe("security configuration", () => {
  const berth = fileURLToPath(new URL("../packages/cluster-core/dist/bin/berth.js", import.meta.url))

  it.live("bad files fail Master.start with a StartupError naming the file and the field", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(fs.realpathSync("/tmp"), "berth-security-"))),
        (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
      )
      const file = (name: string, content: unknown) => {
        const p = path.join(dir, name)
        fs.writeFileSync(p, typeof content === "string" ? content : JSON.stringify(content))
        return p
      }
      const kind = file("kind.json", { credentials: [{ principal: "a", kind: "framework", secret: "s" }, { principal: "b", kind: "admin", secret: "s" }] })
      const acl = file("acl.json", { frameworks: [{ principal: "a", roles: ["web", "no spaces"] }] })
      const cases: Array<[Partial<Master.Config>, RegExp]> = [
        [{ credentials: kind }, new RegExp(`credentials file ${kind}: credentials\\[1\\]\\.kind: Expected "framework" \\| "agent" \\| "operator"`)],
        [{ credentials: file("typo.json", { credentials: [{ principal: "a", kind: "framework", secert: "s" }] }) }, /credentials\[0\]\.secert: Expected no excess property/],
        [{ credentials: file("json.json", "{ not json") }, /json\.json: is not valid JSON/],
        [{ credentials: path.join(dir, "missing.json") }, /missing\.json: cannot read: ENOENT/],
        [{ acls: acl }, new RegExp(`ACL file ${acl}: frameworks\\[0\\]\\.roles\\[1\\]: must be "\\*" or match`)],
        [{ credentials: file("frameworks-only.json", { credentials: [{ principal: "a", kind: "framework", secret: "s" }] }) }, /authentication\.operators: is on \(the default with a credentials file\) but the credentials file lists no principal of kind "operator"/],
        [{ tls: { certFile: path.join(dir, "none.pem"), keyFile: path.join(dir, "none-key.pem") } }, /tls\.certFile .*none\.pem: cannot read/],
        [{ tls: { certFile: kind, keyFile: kind } }, /tls\.certFile .*kind\.json: is not a PEM certificate/],
        [{ subscribeRate: { perSecond: 0, burst: 1 } }, /subscribeRate\.perSecond: must be a finite number > 0/]
      ]
      for (const [config, message] of cases) {
        const exit = yield* Effect.exit(
          Effect.scoped(Master.start({ port: 0, ...config })).pipe(Effect.provide(StateStore.layerMemory))
        )
        expect(Exit.isFailure(exit), message.source).toBe(true)
        const error = Exit.isFailure(exit) ? Option.getOrUndefined(Exit.findErrorOption(exit)) : undefined
        expect(error?._tag, message.source).toBe("StartupError")
        expect(error?.message).toMatch(message)
      }
    }).pipe(quiet))

  it("berth master: bad security flags exit 2 with one line naming the flag, the file and the field", () => {
    const dir = fs.mkdtempSync(path.join("/tmp", "berth-security-cli-"))
    try {
      const bad = path.join(dir, "bad.json")
      fs.writeFileSync(bad, JSON.stringify({ credentials: [{ principal: "a", kind: "root", secret: "s" }] }))
      const cases: Array<[Array<string>, RegExp]> = [
        [["--credentials", bad], new RegExp(`^berth master: --credentials: ${bad}: credentials\\[0\\]\\.kind: Expected "framework"`)],
        [["--credentials", path.join(dir, "none.json")], /^berth master: --credentials: must be a readable file: ENOENT/],
        [["--tls-cert", bad], /^berth master: --tls-key: is required with --tls-cert$/],
        [["--tls-cert", bad, "--tls-key", bad], /^berth master: --tls-cert: .*bad\.json: is not a PEM certificate/],
        [["--subscribe-rate", "fast"], /^berth master: --subscribe-rate: must be "<n>\/s" or "<n>\/s,burst=<m>"/],
        [["--authenticate", "frameworks"], /^berth master: --authenticate: needs --credentials$/],
        [["--authenticate", "everyone", "--credentials", bad], /^berth master: --authenticate: must be "none" or a comma-separated list/]
      ]
      for (const [args, message] of cases) {
        const result = spawnSync(process.execPath, [berth, "master", "--state", "memory:", "--port", "0", ...args], { encoding: "utf8", timeout: 20_000 })
        expect(result.status, args.join(" ")).toBe(2)
        const lines = result.stderr.trim().split("\n")
        expect(lines, args.join(" ")).toHaveLength(1)
        expect(lines[0]).toMatch(message)
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it.live("berth master with --tls-cert, --tls-key and --credentials serves TLS and authenticates", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join("/tmp", "berth-security-cli-"))),
        (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
      )
      const certs = yield* Certificates.generate(path.join(dir, "tls"))
      const credentialsFile = path.join(dir, "credentials.json")
      fs.writeFileSync(credentialsFile, JSON.stringify({
        credentials: [{ principal: "ops", kind: "operator", token: "ops-token" }, { principal: "fw", kind: "framework", secret: "fw-secret" }]
      }))
      const endpoint = yield* Effect.acquireRelease(
        Effect.callback<{ readonly child: ReturnType<typeof spawn>; readonly endpoint: string }, Error>((resume) => {
          const child = spawn(process.execPath, [
            berth, "master", "--state", "memory:", "--port", "0",
            "--tls-cert", certs.server.cert, "--tls-key", certs.server.key,
            "--credentials", credentialsFile, "--authenticate", "frameworks,operators"
          ], { stdio: ["ignore", "pipe", "pipe"] })
          let out = ""
          child.stdout!.on("data", (chunk: Buffer) => {
            out += chunk.toString()
            const match = /listening on (\S+)/.exec(out)
            if (match !== null) resume(Effect.succeed({ child, endpoint: match[1]! }))
          })
          child.on("exit", (code) => resume(Effect.fail(new Error(`berth master exited with ${code}`))))
        }).pipe(Effect.timeout("15 seconds")),
        ({ child }) => Effect.sync(() => child.kill("SIGTERM"))
      )
      const master = endpoint.endpoint
      const anonymous = yield* clients(master, { ca: certs.ca })
      expect((yield* anonymous.getState).code).toBe("UNAUTHENTICATED")
      const plain = yield* clients(master, undefined, { token: "ops-token" })
      expect((yield* plain.getState).code).toBe("UNAVAILABLE")
      const ops = yield* clients(master, { ca: certs.ca }, { token: "ops-token" })
      expect(yield* ops.getState).toEqual(ok)
      expect((yield* ops.subscribe({ name: "ops" })).code).toBe("PERMISSION_DENIED")
      const fw = yield* clients(master, { ca: certs.ca }, { principal: "fw", secret: "fw-secret" })
      expect(yield* fw.subscribe({ name: "cli-fw" })).toEqual(ok)
    }).pipe(Effect.scoped, quiet), 30_000)
})
