import { describe, expect, it } from "@effect/vitest"
import { AppDefinition } from "@berth/marathon-like"
import { Result } from "effect"

const V = "2026-01-01T00:00:00.000Z"

const decode = (body: unknown) => AppDefinition.decode(body, V)

describe("AppDefinition", () => {
  it("applies Marathon's defaults", () => {
    const app = Result.getOrThrow(decode({ id: "web", cmd: "sleep 1000" }))
    expect(app).toMatchObject({
      id: "/web", cmd: "sleep 1000", args: null, cpus: 1, mem: 128, disk: 0, gpus: 0, instances: 1,
      backoffSeconds: 1, backoffFactor: 1.15, maxLaunchDelaySeconds: 300, killSelection: "YOUNGEST_FIRST",
      upgradeStrategy: { minimumHealthCapacity: 1, maximumOverCapacity: 1 },
      unreachableStrategy: { inactiveAfterSeconds: 0, expungeAfterSeconds: 0 },
      portDefinitions: [{ port: 0, protocol: "tcp", labels: {} }], requirePorts: false,
      constraints: [], labels: {}, env: {}, healthChecks: [], dependencies: [], version: V
    })
  })

  it("gives resident apps (persistent volumes) upgradeStrategy 0.5/0 and unreachableStrategy disabled", () => {
    const app = Result.getOrThrow(decode({
      id: "/db", cmd: "x", container: { type: "MESOS", volumes: [{ containerPath: "data", mode: "RW", persistent: { size: 10 } }] }
    }))
    expect(app.upgradeStrategy).toEqual({ minimumHealthCapacity: 0.5, maximumOverCapacity: 0 })
    expect(app.unreachableStrategy).toBe("disabled")
    expect(AppDefinition.isResident(app)).toBe(true)
  })

  it("applies health check defaults", () => {
    const app = Result.getOrThrow(decode({ id: "/a", cmd: "x", healthChecks: [{ protocol: "MESOS_HTTP" }] }))
    expect(app.healthChecks[0]).toEqual({
      protocol: "MESOS_HTTP", path: "/", portIndex: 0, gracePeriodSeconds: 300, intervalSeconds: 60, timeoutSeconds: 20,
      maxConsecutiveFailures: 3, delaySeconds: 15, ignoreHttp1xx: false
    })
  })

  it("names every bad path, Marathon style", () => {
    const r = decode({ id: "/Bad_Id", cmd: "x", cpus: -1, mem: "lots", instances: 1.5, constraints: [["hostname", "NOPE"]], healthChecks: [{ portIndex: 3 }] })
    expect(Result.isFailure(r)).toBe(true)
    const failure = (r as Result.Failure<AppDefinition.App, AppDefinition.InvalidApp>).failure
    const paths = failure.details.map((d) => d.path).sort()
    expect(paths).toEqual(["/constraints(0)", "/cpus", "/id", "/instances", "/mem"])
    expect(failure.body.message).toBe("Object is not valid")
    expect(failure.details.find((d) => d.path === "/cpus")!.errors[0]).toMatch(/0\.001/)
  })

  it("rejects cmd together with args, and neither", () => {
    const both = decode({ id: "/a", cmd: "x", args: ["y"] })
    const none = decode({ id: "/a" })
    expect(Result.isFailure(both) && both.failure.details[0]!.path).toBe("/")
    expect(Result.isFailure(none) && none.failure.details[0]!.errors[0]).toMatch(/cmd.*args/)
  })

  it("checks cross-field rules: health check port index, resident over-capacity, MAX_PER value", () => {
    const hc = decode({ id: "/a", cmd: "x", portDefinitions: [], healthChecks: [{ protocol: "TCP" }] })
    expect(Result.isFailure(hc) && hc.failure.details.map((d) => d.path)).toEqual(["/healthChecks(0)/portIndex"])
    const over = decode({
      id: "/a", cmd: "x", upgradeStrategy: { maximumOverCapacity: 0.5 },
      container: { volumes: [{ containerPath: "data", persistent: { size: 1 } }] }
    })
    expect(Result.isFailure(over) && over.failure.details.map((d) => d.path)).toEqual(["/upgradeStrategy/maximumOverCapacity"])
    const self = decode({ id: "/a/b", cmd: "x", dependencies: ["a/b"] })
    expect(Result.isFailure(self) && self.failure.details.map((d) => d.path)).toEqual(["/dependencies(0)"])
    const maxPer = decode({ id: "/a", cmd: "x", constraints: [["hostname", "MAX_PER"]] })
    expect(Result.isFailure(maxPer) && maxPer.failure.details[0]!.errors[0]).toMatch(/MAX_PER/)
  })

  it("accepts all seven constraint operators", () => {
    const r = decode({
      id: "/a", cmd: "x",
      constraints: [["hostname", "UNIQUE"], ["rack", "CLUSTER", "r1"], ["zone", "GROUP_BY", "3"], ["hostname", "LIKE", "a.*"], ["hostname", "UNLIKE", "b"], ["rack", "MAX_PER", "2"], ["os", "IS", "linux"]]
    })
    expect(Result.isSuccess(r)).toBe(true)
  })

  it("normalises nested ids", () => {
    expect(AppDefinition.normalizeId("prod/web/")).toBe("/prod/web")
    expect(Result.getOrThrow(decode({ id: "prod/db/main", cmd: "x" })).id).toBe("/prod/db/main")
  })
})
