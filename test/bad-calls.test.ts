import { describe, expect, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import { Resources, v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Effect, Option } from "effect"
import * as Framework from "./support/framework.ts"

/**
 * Malformed calls against a live master, each answered with a status whose message names the
 * field and the rule, and none changing any state.
 */
interface Outcome {
  readonly code: string
  readonly field: string
  readonly message: string
}

type Unary<Req> = (request: Req, callback: (error: grpc.ServiceError | null) => void) => unknown

const attempt = <Req>(invoke: Unary<Req>, request: Req) =>
  Effect.callback<Outcome>((resume) => {
    invoke(request, (error) =>
      resume(Effect.succeed(
        error === null
          ? { code: "OK", field: "", message: "" }
          : {
            code: grpc.status[error.code] ?? String(error.code),
            field: String(error.metadata?.get("berth-field")[0] ?? ""),
            message: error.details
          }
      )))
  })

const subscribeOutcome = (client: v1.SchedulerServiceClient, request: v1.SubscribeRequest) =>
  Effect.callback<Outcome>((resume) => {
    const call = client.subscribe(request)
    call.on("data", () => {
      call.cancel()
      resume(Effect.succeed({ code: "OK", field: "", message: "" }))
    })
    call.on("error", (error: grpc.ServiceError) =>
      resume(Effect.succeed({
        code: grpc.status[error.code] ?? String(error.code),
        field: String(error.metadata?.get("berth-field")[0] ?? ""),
        message: error.details
      })))
  })

const info = (overrides: Partial<v1.FrameworkInfo>) => v1.FrameworkInfo.create({ name: "bad", roles: ["*"], ...overrides })
const nan = (name: string): v1.Resource => ({ ...Resources.scalar(name, 1), value: { $case: "scalar", value: Number.NaN } })

describe("malformed calls", () => {
  it.live("are each rejected with the field and the rule, and change nothing", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const framework = yield* Framework.open(cluster.master)
      const offer = yield* framework.nextOffer
      const streamId = Option.getOrThrow(yield* framework.session.info).streamId
      const scheduler = new v1.SchedulerServiceClient(cluster.master, grpc.credentials.createInsecure())
      const operator = new v1.OperatorServiceClient(cluster.master, grpc.credentials.createInsecure())
      yield* Effect.addFinalizer(() => Effect.sync(() => (scheduler.close(), operator.close())))
      const session = { frameworkId: framework.frameworkId, streamId }
      const s = <K extends keyof v1.SchedulerServiceClient>(k: K) => (scheduler[k] as Function).bind(scheduler) as never
      const o = <K extends keyof v1.OperatorServiceClient>(k: K) => (operator[k] as Function).bind(operator) as never
      const task = (overrides: Partial<v1.TaskInfo>) =>
        v1.TaskInfo.create({ taskId: "t", resources: [Resources.scalar("cpus", 0.1)], command: { shell: true, value: "true" }, ...overrides })
      const launch = (t: v1.TaskInfo): Array<v1.Operation> => [{ operationId: "", kind: { $case: "launch", value: { taskInfos: [t] } } }]
      const accept = (request: Partial<v1.AcceptRequest>) =>
        attempt<v1.AcceptRequest>(s("accept"), v1.AcceptRequest.create({ session, offerIds: [offer.offerId], ...request }))

      const cases: Array<[string, Effect.Effect<Outcome>, string, string, RegExp]> = [
        ["subscribe without framework info", subscribeOutcome(scheduler, v1.SubscribeRequest.create({})), "INVALID_ARGUMENT", "frameworkInfo", /is required/],
        ["subscribe with an empty name", subscribeOutcome(scheduler, { frameworkInfo: info({ name: " " }), suppressedRoles: [] }), "INVALID_ARGUMENT", "frameworkInfo.name", /must not be empty/],
        ["subscribe with a bad role", subscribeOutcome(scheduler, { frameworkInfo: info({ roles: ["a b"] }), suppressedRoles: [] }), "INVALID_ARGUMENT", "frameworkInfo.roles[0]", /must be "\*" or match/],
        ["subscribe with a negative failover timeout", subscribeOutcome(scheduler, { frameworkInfo: info({ failoverTimeoutSeconds: -1 }), suppressedRoles: [] }), "INVALID_ARGUMENT", "frameworkInfo.failoverTimeoutSeconds", />= 0/],
        ["subscribe with a NaN failover timeout", subscribeOutcome(scheduler, { frameworkInfo: info({ failoverTimeoutSeconds: Number.NaN }), suppressedRoles: [] }), "INVALID_ARGUMENT", "frameworkInfo.failoverTimeoutSeconds", /finite/],
        ["subscribe with an unknown framework id", subscribeOutcome(scheduler, { frameworkInfo: info({ frameworkId: "no-such-framework" }), suppressedRoles: [] }), "NOT_FOUND", "frameworkInfo.frameworkId", /unknown to this cluster/],
        ["accept without a session", attempt<v1.AcceptRequest>(s("accept"), v1.AcceptRequest.create({ offerIds: [offer.offerId] })), "INVALID_ARGUMENT", "session.frameworkId", /is required/],
        ["accept with a wrong stream id", accept({ session: { ...session, streamId: "stale" } }), "FAILED_PRECONDITION", "", /not the current session/],
        ["accept with no offer", accept({ offerIds: [] }), "INVALID_ARGUMENT", "offerIds", /at least one offer/],
        ["accept an unknown offer", accept({ offerIds: ["nope"] }), "INVALID_ARGUMENT", "offerIds[0]", /unknown, expired or already used/],
        ["accept NaN cpus", accept({ operations: launch(task({ resources: [nan("cpus")] })) }), "INVALID_ARGUMENT", "operations[0].launch.taskInfos[0].resources[0].scalar", /finite/],
        ["accept negative memory", accept({ operations: launch(task({ resources: [Resources.scalar("cpus", 0.1), { ...Resources.scalar("mem", 1), value: { $case: "scalar", value: -5 } }] })) }), "INVALID_ARGUMENT", "operations[0].launch.taskInfos[0].resources[1].scalar", /mem must be >= 0/],
        ["accept reversed port ranges", accept({ operations: launch(task({ resources: [Resources.scalar("cpus", 0.1), { ...Resources.ranges("ports", []), value: { $case: "ranges", value: { range: [{ begin: 31005, end: 31001 }] } } }] })) }), "INVALID_ARGUMENT", "operations[0].launch.taskInfos[0].resources[1].ranges.range[0]", /begin must be <= end/],
        ["accept a resource without a value", accept({ operations: launch(task({ resources: [Resources.scalar("cpus", 0.1), { name: "mem", allocationRole: "", reservations: [], shared: false }] })) }), "INVALID_ARGUMENT", "operations[0].launch.taskInfos[0].resources[1].value", /must be set/],
        ["accept a nameless resource", accept({ operations: launch(task({ resources: [{ ...Resources.scalar("cpus", 0.1), name: "" }] })) }), "INVALID_ARGUMENT", "operations[0].launch.taskInfos[0].resources[0].name", /must not be empty/],
        ["accept a bad environment variable", accept({ operations: launch(task({ command: v1.CommandInfo.create({ shell: true, value: "true", environment: [{ name: "1X", value: "" }] }) })) }), "INVALID_ARGUMENT", "operations[0].launch.taskInfos[0].command.environment[0].name", /valid environment variable name/],
        ["accept an operation of no kind", accept({ operations: [{ operationId: "" }] }), "INVALID_ARGUMENT", "operations[0].kind", /must be set/],
        ["decline with negative refusal", attempt<v1.DeclineRequest>(s("decline"), { session, offerIds: [offer.offerId], filters: { refuseSeconds: -1 } }), "INVALID_ARGUMENT", "filters.refuseSeconds", />= 0/],
        ["decline with NaN refusal", attempt<v1.DeclineRequest>(s("decline"), { session, offerIds: [offer.offerId], filters: { refuseSeconds: Number.NaN } }), "INVALID_ARGUMENT", "filters.refuseSeconds", />= 0/],
        ["revive a role that is not the framework's", attempt<v1.ReviveRequest>(s("revive"), { session, roles: ["other"] }), "INVALID_ARGUMENT", "roles[0]", /not one of the framework's roles/],
        ["suppress a role that is not the framework's", attempt<v1.SuppressRequest>(s("suppress"), { session, roles: ["other"] }), "INVALID_ARGUMENT", "roles[0]", /not one of the framework's roles/],
        ["kill without a task id", attempt<v1.KillRequest>(s("kill"), { session, kills: [{ taskId: "", agentId: "" }] }), "INVALID_ARGUMENT", "kills[0].taskId", /is required/],
        ["kill with a negative grace period", attempt<v1.KillRequest>(s("kill"), { session, kills: [{ taskId: "x", agentId: "", killPolicy: { gracePeriodSeconds: -1 } }] }), "INVALID_ARGUMENT", "kills[0].killPolicy.gracePeriodSeconds", />= 0/],
        ["acknowledge without a uuid", attempt<v1.AcknowledgeRequest>(s("acknowledge"), { session, acknowledgements: [{ agentId: "a", taskId: "t", uuid: new Uint8Array() }] }), "INVALID_ARGUMENT", "acknowledgements[0].uuid", /is required/],
        ["acknowledge an unknown task without its agent", attempt<v1.AcknowledgeRequest>(s("acknowledge"), { session, acknowledgements: [{ agentId: "", taskId: "nope", uuid: new Uint8Array(16) }] }), "INVALID_ARGUMENT", "acknowledgements[0].agentId", /unknown task/],
        ["reconcile with a wrong stream id", attempt<v1.ReconcileRequest>(s("reconcile"), { session: { ...session, streamId: "stale" }, tasks: [] }), "FAILED_PRECONDITION", "", /not the current session/],
        ["teardown with a wrong stream id", attempt<v1.TeardownRequest>(s("teardown"), { session: { ...session, streamId: "stale" } }), "FAILED_PRECONDITION", "", /not the current session/],
        ["weights: zero", attempt<v1.UpdateWeightsRequest>(o("updateWeights"), { role: "web", weight: 0 }), "INVALID_ARGUMENT", "weight", /> 0/],
        ["quota: a range", attempt<v1.UpdateQuotaRequest>(o("updateQuota"), { role: "web", limits: [Resources.ranges("ports", [[1, 2]])] }), "INVALID_ARGUMENT", "limits[0]", /scalar resources only/],
        ["drain an unknown agent", attempt<v1.DrainAgentRequest>(o("drainAgent"), { agentId: "nope", markGone: false }), "NOT_FOUND", "agentId", /no agent/],
        ["drain with a negative grace period", attempt<v1.DrainAgentRequest>(o("drainAgent"), { agentId: cluster.agents[0]!.agentId, maxGracePeriodSeconds: -2, markGone: false }), "INVALID_ARGUMENT", "maxGracePeriodSeconds", />= 0/],
        ["mark an unknown agent gone", attempt<v1.MarkAgentGoneRequest>(o("markAgentGone"), { agentId: "nope" }), "NOT_FOUND", "agentId", /no agent/],
        ["an oversized message", accept({ operations: launch(task({ data: new Uint8Array(20 * 1024 * 1024) })) }), "RESOURCE_EXHAUSTED", "", /./]
      ]
      expect(cases.length).toBeGreaterThanOrEqual(25)
      for (const [name, call, code, field, rule] of cases) {
        const outcome = yield* call
        expect(outcome.code, name).toBe(code)
        expect(outcome.field, name).toBe(field)
        expect(outcome.message, name).toMatch(rule)
      }

      // Nothing changed: one framework, no task, the agent active, no weights or quota set, and
      // the offer the bad Accepts named still usable.
      const state = yield* cluster.operator.state
      expect(state.frameworks.map((f) => f.info?.frameworkId)).toEqual([framework.frameworkId])
      expect(state.tasks).toEqual([])
      expect(state.agents.map((a) => a.state)).toEqual([v1.Agent_State.ACTIVE])
      expect((yield* cluster.operator.getQuota).quotas).toEqual([])
      const ok = yield* framework.session.accept([offer.offerId], launch(task({ taskId: "fine" })))
      expect(ok.launchedTaskIds).toEqual(["fine"])
    }), 60_000)
})
