// The web UI's pure logic: app status derivation (Marathon UI semantics) and the mapping of 422
// `details[].path` to form fields.
import { describe, expect, it } from "@effect/vitest"
import type { App, QueueItem } from "../ui/api.ts"
import { appStatus, taskHealth } from "../ui/status.ts"
import { mapDetails, pathSegments } from "../ui/validation.ts"

const app = (patch: Partial<App>): App => ({ id: "/web", instances: 2, tasksRunning: 2, deployments: [], ...patch })
const queued = (patch: Partial<QueueItem>): QueueItem => ({ count: 1, delay: { timeLeftSeconds: 0, overdue: true }, ...patch })

describe("appStatus", () => {
  it("is Running when every instance runs and nothing is queued", () => {
    expect(appStatus(app({}), undefined)).toBe("Running")
  })
  it("is Deploying while a deployment is in flight", () => {
    expect(appStatus(app({ deployments: [{ id: "d1" }], tasksRunning: 1 }), queued({}))).toBe("Deploying")
  })
  it("is Waiting when a deployment's instances are queued and offers were declined", () => {
    const q = queued({ processedOffersSummary: { unusedOffersCount: 7 } })
    expect(appStatus(app({ deployments: [{ id: "d1" }], tasksRunning: 1 }), q)).toBe("Waiting")
  })
  it("is Waiting when fewer instances run than wanted outside a deployment", () => {
    expect(appStatus(app({ tasksRunning: 1 }), undefined)).toBe("Waiting")
  })
  it("is Delayed while the launch backoff runs, even during a deployment", () => {
    const q = queued({ delay: { timeLeftSeconds: 12, overdue: false } })
    expect(appStatus(app({ tasksRunning: 0, deployments: [{ id: "d1" }] }), q)).toBe("Delayed")
  })
  it("is Suspended at zero instances with nothing running", () => {
    expect(appStatus(app({ instances: 0, tasksRunning: 0 }), undefined)).toBe("Suspended")
  })
})

describe("taskHealth", () => {
  it("reads health check results and staging states", () => {
    expect(taskHealth({ id: "t", state: "TASK_RUNNING", healthCheckResults: [{ alive: true }] })).toBe("Healthy")
    expect(taskHealth({ id: "t", state: "TASK_RUNNING", healthCheckResults: [{ alive: true }, { alive: false }] })).toBe("Unhealthy")
    expect(taskHealth({ id: "t", state: "TASK_RUNNING", healthCheckResults: [] })).toBe("Unknown")
    expect(taskHealth({ id: "t", state: "TASK_STAGING" })).toBe("Staged")
  })
})

describe("422 details to form fields", () => {
  it("accepts Marathon's `(i)` and JSON-pointer indexes", () => {
    expect(pathSegments("/constraints(1)")).toEqual(["constraints", "1"])
    expect(pathSegments("/constraints/1/2")).toEqual(["constraints", "1", "2"])
  })
  it("puts field errors next to their fields and the rest in the alert", () => {
    const mapped = mapDetails([
      { path: "/cpus", errors: ["must be greater than or equal to 0.001"] },
      { path: "/mem", errors: ["expected a number"] },
      { path: "/id", errors: ["bad id"] },
      { path: "/args", errors: ["cmd and args are exclusive"] },
      { path: "/constraints/1", errors: ["MAX_PER needs a value"] },
      { path: "/healthChecks/0/path", errors: ["must start with /"] },
      { path: "/", errors: ["cmd, args or container is required"] }
    ])
    expect(mapped.byField).toMatchObject({ cpus: "must be greater than or equal to 0.001", mem: "expected a number", id: "bad id", cmd: "cmd and args are exclusive" })
    expect(mapped.constraintRows).toEqual({ 1: "MAX_PER needs a value" })
    expect(mapped.other.map((d) => d.path)).toEqual(["/healthChecks/0/path", "/"])
  })
})
