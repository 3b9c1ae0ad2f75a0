import { describe, expect, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import { Requirement } from "@berth/sdk-scheduler"

const issues = (input: unknown) => {
  const result = Requirement.decodeResult(input)
  if (Result.isSuccess(result)) throw new Error("expected a RequirementError")
  return result.failure.issues
}

describe("Requirement", () => {
  it("decodes Marathon's array form of constraints into objects", () => {
    const r = Requirement.decodeSync({
      id: "kv-0",
      resources: { cpus: 1, mem: 256, ports: ["http", "admin"] },
      constraints: [["hostname", "UNIQUE"], ["zone", "GROUP_BY", "3"], { field: "@region", operator: "IS", value: "eu" }]
    })
    expect(r.constraints).toEqual([
      { field: "hostname", operator: "UNIQUE" },
      { field: "zone", operator: "GROUP_BY", value: "3" },
      { field: "@region", operator: "IS", value: "eu" }
    ])
  })

  it("names the field and the rule of every problem", () => {
    expect(
      issues({
        id: "kv-0",
        resources: { cpus: 1, mem: 10, ports: ["http", "http"] },
        constraints: [["hostname", "UNIQUE"], { field: "zone", operator: "MAX_PER" }, ["rack", "LIKE", "("], ["zone", "GROUP_BY", "x"]]
      })
    ).toEqual([
      { field: "resources.ports[1]", rule: "port name \"http\" is listed twice" },
      { field: "constraints[1].value", rule: "MAX_PER needs an integer >= 1" },
      { field: "constraints[2].value", rule: "LIKE needs a valid regular expression" },
      { field: "constraints[3].value", rule: "GROUP_BY takes an optional integer >= 1 (the number of distinct values expected)" }
    ])
    expect(issues({ id: "kv-0", resources: { cpus: 0, mem: 10 } })).toEqual([{ field: "resources.cpus", rule: "must be a finite number > 0" }])
    expect(issues({ id: "kv-0", resources: { cpus: 1, mem: 1 }, volumes: [{ persistenceId: "v", containerPath: "../etc", size: 1 }] })[0]).toEqual({
      field: "volumes[0].containerPath",
      rule: "must be a relative path inside the sandbox (no .., not absolute)"
    })
  })

  it("requires a reservation (and a role) for volumes, and a size for new ones", () => {
    expect(issues({ id: "kv-0", resources: { cpus: 1, mem: 1 }, volumes: [{ persistenceId: "v", containerPath: "data", size: 1 }] })).toEqual([
      { field: "reservation", rule: "persistent volumes live on reserved disk: set reservation (labels default to the requirement id)" }
    ])
    expect(issues({ id: "kv-0", resources: { cpus: 1, mem: 1 }, reservation: {} })).toEqual([{ field: "role", rule: "a reservation is made for a role: set role" }])
    expect(issues({ id: "kv-0", role: "r", reservation: {}, resources: { cpus: 1, mem: 1 }, volumes: [{ persistenceId: "v", containerPath: "data" }] })).toEqual([
      { field: "volumes[0].size", rule: "a new volume needs a size in MB (or existing: true)" }
    ])
  })

  it.effect("decode fails with a RequirementError in the error channel", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Requirement.decode({ id: "", resources: { cpus: 1, mem: 1 } }))
      expect(error._tag).toBe("RequirementError")
      expect(error.field).toBe("id")
      expect(error.message).toContain("id: must match")
    }))

  it("defaults the reservation labels to the requirement id", () => {
    const r = Requirement.decodeSync({ id: "kv-0", role: "r", reservation: {}, resources: { cpus: 1, mem: 1 } })
    expect(Requirement.reservationLabels(r)).toEqual({ "berth.requirement": "kv-0" })
  })
})

describe("Requirement fixed ports", () => {
  it("accepts fixed ports by name and refuses bad numbers, duplicates and names that are also chosen ports", () => {
    expect(Requirement.decodeSync({ id: "w", resources: { cpus: 1, mem: 1, ports: ["http"], fixedPorts: { metrics: 9102 } } }).resources.fixedPorts).toEqual({ metrics: 9102 })
    expect(issues({ id: "w", resources: { cpus: 1, mem: 1, fixedPorts: { http: 0 } } })).toEqual([{ field: "resources.fixedPorts.http", rule: "must be a port number from 1 to 65535" }])
    expect(issues({ id: "w", resources: { cpus: 1, mem: 1, fixedPorts: { http: 70000 } } })).toEqual([{ field: "resources.fixedPorts.http", rule: "must be a port number from 1 to 65535" }])
    expect(issues({ id: "w", resources: { cpus: 1, mem: 1, fixedPorts: { a: 80, b: 80 } } })).toEqual([{ field: "resources.fixedPorts.b", rule: "port 80 is also asked for as \"a\"" }])
    expect(issues({ id: "w", resources: { cpus: 1, mem: 1, ports: ["http"], fixedPorts: { http: 80 } } })).toEqual([
      { field: "resources.fixedPorts.http", rule: "\"http\" is also listed in ports: a port is either fixed or chosen from the offer" }
    ])
    expect(issues({ id: "w", resources: { cpus: 1, mem: 1, fixedPorts: { Bad: 80 } } })[0]!.field).toBe("resources.fixedPorts.Bad")
  })
})
