import { describe, expect, it } from "@effect/vitest"
import { ServiceSpec } from "@berth/sdk-scheduler"
import { Effect, Result } from "effect"

const kvYaml = `
name: kv-store
role: kv
pods:
  kv:
    count: 3
    placement: [["hostname", "UNIQUE"]]
    volumes: [{ path: data, size: 64 }]
    tasks:
      server:
        goal: RUNNING
        cmd: ./kv --data data
        cpus: 0.1
        mem: 64
        ports: [http]
        env: { LOG: info }
        readiness: { cmd: "test -f data/ready", intervalSeconds: 1 }
        configs: [{ dest: kv.conf, template: "id={{POD_INSTANCE_INDEX}}" }]
plans:
  backup:
    parameters: { BUCKET: default-bucket }
    phases:
      dump: { pod: kv, tasks: [server] }
`

const base = (): ServiceSpec.Encoded => ({
  name: "svc",
  pods: { web: { count: 2, tasks: { main: { goal: "RUNNING", cmd: "sleep 100", cpus: 0.1, mem: 32 } } } }
})
const withPod = (pod: Record<string, unknown>) => {
  const b = base() as any
  return { ...b, pods: { web: { ...b.pods.web, ...pod } } }
}
const withTask = (task: Record<string, unknown>) => {
  const b = base() as any
  return { ...b, pods: { web: { ...b.pods.web, tasks: { main: { ...b.pods.web.tasks.main, ...task } } } } }
}

const issuesOf = (input: unknown) => {
  const r = ServiceSpec.decodeResult(input)
  if (Result.isSuccess(r)) throw new Error("expected a failure")
  return r.failure.issues.map((i) => `${i.path}: ${i.rule}`)
}

describe("ServiceSpec decoding", () => {
  it("loads a complete spec from YAML, with constraints in Marathon form", () => {
    const spec = ServiceSpec.fromYamlSync(kvYaml)
    expect(spec.pods.kv!.count).toBe(3)
    expect(spec.pods.kv!.placement).toEqual([{ field: "hostname", operator: "UNIQUE" }])
    expect(ServiceSpec.instances(spec)).toEqual(["kv-0", "kv-1", "kv-2"])
    expect(ServiceSpec.roleOf(spec)).toBe("kv")
    expect(spec.plans?.backup?.phases.dump?.tasks).toEqual(["server"])
  })

  it("decodes the same spec from code", () => {
    const spec = ServiceSpec.decodeSync(base())
    expect(ServiceSpec.instances(spec)).toEqual(["web-0", "web-1"])
    expect(ServiceSpec.roleOf(spec)).toBe("svc-role")
  })

  const badInputs: Array<[string, unknown, string]> = [
    ["count 0", withPod({ count: 0 }), "pods.web.count: must be ≥ 1"],
    ["fractional count", withPod({ count: 1.5 }), "pods.web.count"],
    ["no pods", { name: "svc", pods: {} }, "pods: must declare at least one pod"],
    ["no tasks", withPod({ tasks: {} }), "pods.web.tasks: must declare at least one task"],
    ["bad service name", { ...base(), name: "Bad Name" }, "name: service names must match"],
    ["bad pod name", { name: "svc", pods: { "Web!": (base() as any).pods.web } }, "pods.Web!: pod names must match"],
    ["bad goal", withTask({ goal: "FOREVER" }), "pods.web.tasks.main.goal"],
    ["empty cmd", withTask({ cmd: "" }), "pods.web.tasks.main.cmd: must not be empty"],
    ["negative cpus", withTask({ cpus: -1 }), "pods.web.tasks.main.cpus: must be > 0"],
    ["missing mem", withTask({ mem: undefined }), "pods.web.tasks.main.mem: is required (or name a resourceSet)"],
    ["unknown resource set", withTask({ cpus: undefined, mem: undefined, resourceSet: "big" }), 'pods.web.tasks.main.resourceSet: no resource set "big" in pods.web.resourceSets'],
    ["resource set and inline", { ...withPod({ resourceSets: { big: { cpus: 1, mem: 1 } } }), pods: { web: { ...withPod({ resourceSets: { big: { cpus: 1, mem: 1 } } }).pods.web, tasks: { main: { goal: "RUNNING", cmd: "x", cpus: 1, mem: 1, resourceSet: "big" } } } } }, "pods.web.tasks.main.resourceSet: give either resourceSet or cpus/mem, not both"],
    ["bad constraint", withPod({ placement: [["hostname", "MAX_PER"]] }), "pods.web.placement[0].value: MAX_PER needs an integer >= 1"],
    ["unknown operator", withPod({ placement: [{ field: "hostname", operator: "NEAR" }] }), "pods.web.placement[0]"],
    ["absolute volume path", withPod({ volumes: [{ path: "/data", size: 1 }] }), "pods.web.volumes[0].path: must be a relative path inside the sandbox"],
    ["volume without size", withPod({ volumes: [{ path: "data" }] }), "pods.web.volumes[0].size"],
    ["duplicate volume", withPod({ volumes: [{ path: "d", size: 1 }, { path: "d", size: 2 }] }), 'pods.web.volumes[1].path: "d" is listed twice'],
    ["duplicate port", withTask({ ports: ["http", "http"] }), 'pods.web.tasks.main.ports[1]: port name "http" is listed twice'],
    ["bad env name", withTask({ env: { "1X": "a" } }), "pods.web.tasks.main.env.1X: environment variable names must match"],
    ["bad uri", withTask({ uris: ["ftp://x"] }), "pods.web.tasks.main.uris[0]: must be an http(s):// or file:// URI"],
    ["readiness on a FINISH task", withTask({ goal: "FINISH", readiness: { cmd: "true" } }), "pods.web.tasks.main.readiness: only a RUNNING task can have a readiness check"],
    ["check with zero interval", withTask({ health: { cmd: "true", intervalSeconds: 0 } }), "pods.web.tasks.main.health.intervalSeconds: must be > 0"],
    ["config escaping the sandbox", withTask({ configs: [{ dest: "../x", template: "" }] }), "pods.web.tasks.main.configs[0].dest: must be a relative path"],
    ["plan on a missing pod", { ...base(), plans: { backup: { phases: { p: { pod: "db" } } } } }, 'plans.backup.phases.p.pod: no pod "db" in pods'],
    ["plan on a missing task", { ...base(), plans: { backup: { phases: { p: { pod: "web", tasks: ["nope"] } } } } }, 'plans.backup.phases.p.tasks[0]: no task "nope" in pods.web.tasks'],
    ["plan named deploy", { ...base(), plans: { deploy: { phases: { p: { pod: "web" } } } } }, 'plans.deploy: "deploy" is a built-in plan'],
    ["bad strategy", { ...base(), plans: { b: { strategy: "random", phases: { p: { pod: "web" } } } } }, "plans.b.strategy"],
    ["self dependency", { ...base(), plans: { b: { strategy: "dependency", phases: { p: { pod: "web", dependsOn: ["p"] } } } } }, "plans.b.phases.p.dependsOn[0]: a phase cannot depend on itself"]
  ]

  it.each(badInputs)("rejects %s, naming the path and the rule", (_label, input, expected) => {
    const issues = issuesOf(input)
    expect(issues.some((i) => i.startsWith(expected)), issues.join("\n")).toBe(true)
  })

  it("reports every problem at once", () => {
    const issues = issuesOf({ name: "svc", pods: { web: { count: 0, tasks: { main: { goal: "RUNNING", cmd: "", cpus: 1 } } } } })
    expect(issues).toEqual(expect.arrayContaining([
      "pods.web.count: must be ≥ 1",
      "pods.web.tasks.main.cmd: must not be empty"
    ]))
  })

  const badYaml: Array<[string, string, string]> = [
    ["a syntax error", "name: [unclosed", "(yaml): line"],
    ["a duplicate key", "name: a\nname: b\npods: {}", "(yaml): line 2"],
    ["count 0", kvYaml.replace("count: 3", "count: 0"), "pods.kv.count: must be ≥ 1"],
    ["a string count", kvYaml.replace("count: 3", "count: three"), "pods.kv.count"],
    ["a missing cmd", kvYaml.replace("cmd: ./kv --data data", ""), "pods.kv.tasks.server.cmd"]
  ]
  it.each(badYaml)("rejects YAML with %s", (_label, text, expected) => {
    const r = ServiceSpec.fromYamlResult(text)
    expect(Result.isFailure(r)).toBe(true)
    if (Result.isFailure(r)) expect(r.failure.message).toContain(expected)
  })

  it.effect("fails the Effect form with a tagged error", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(ServiceSpec.fromYaml(kvYaml.replace("count: 3", "count: 0")))
      expect(error._tag).toBe("ServiceSpecError")
      expect(error.message).toBe("pods.kv.count: must be ≥ 1")
    }))
})

describe("ServiceSpec config updates", () => {
  const kv = ServiceSpec.fromYamlSync(kvYaml)
  const update = (f: (spec: any) => void) => {
    const copy = structuredClone(kv) as any
    f(copy)
    return ServiceSpec.decodeSync(copy)
  }

  const cases: Array<[string, (spec: any) => void, Array<string>]> = [
    ["scale up", (s) => (s.pods.kv.count = 5), []],
    ["a new command", (s) => (s.pods.kv.tasks.server.cmd = "./kv2"), []],
    ["a new pod", (s) => (s.pods.extra = { count: 1, tasks: { t: { goal: "FINISH", cmd: "true", cpus: 1, mem: 1 } } }), []],
    ["a shrink without decommission", (s) => (s.pods.kv.count = 2), ["pods.kv.count: cannot shrink from 3 to 2 unless allowDecommission: true"]],
    ["a shrink with decommission", (s) => { s.pods.kv.count = 2; s.pods.kv.allowDecommission = true }, []],
    ["a volume resize", (s) => (s.pods.kv.volumes[0].size = 128), ["pods.kv.volumes: cannot change once deployed (was data:64MB, now data:128MB)"]],
    ["a removed volume", (s) => delete s.pods.kv.volumes, ["pods.kv.volumes: cannot change once deployed (was data:64MB, now none)"]],
    ["a removed pod", (s) => { s.pods.other = s.pods.kv; delete s.pods.kv; delete s.plans }, ["pods.kv: cannot be removed unless the pod sets allowDecommission: true"]],
    ["a new role", (s) => (s.role = "other"), ['role: cannot change: reservations are held for "kv"']],
    ["a new name", (s) => (s.name = "kv2"), ['name: cannot change (was "kv-store")']]
  ]
  it.each(cases)("%s", (_label, f, expected) => {
    expect(ServiceSpec.validateUpdate(kv, update(f)).map((i) => `${i.path}: ${i.rule}`)).toEqual(expected)
  })

  it.effect("checkUpdate fails with every reason", () =>
    Effect.gen(function*() {
      const next = update((s) => { s.pods.kv.count = 1; s.pods.kv.volumes[0].size = 1 })
      const error = yield* Effect.flip(ServiceSpec.checkUpdate(kv, next))
      expect(error.issues.map((i) => i.path)).toEqual(["pods.kv.volumes", "pods.kv.count"])
    }))
})

describe("ServiceSpec derived facts", () => {
  const kv = ServiceSpec.fromYamlSync(kvYaml)
  it("turns an instance into a placement requirement, new or in place", () => {
    const fresh = ServiceSpec.requirement(kv, "kv", 1)
    expect(fresh).toMatchObject({
      id: "kv-1", group: "kv", role: "kv",
      resources: { cpus: 0.1, mem: 64, ports: ["http"] },
      reservation: { labels: { "berth.service": "kv-store", "berth.instance": "kv-1", "berth.generation": "0" } },
      volumes: [{ persistenceId: "kv-store.kv-1.data", containerPath: "data", size: 64 }],
      constraints: [{ field: "hostname", operator: "UNIQUE" }]
    })
    const inPlace = ServiceSpec.requirement(kv, "kv", 1, { existing: true })
    expect(inPlace.reservation?.existing).toBe(true)
    expect(inPlace.volumes).toEqual([{ persistenceId: "kv-store.kv-1.data", containerPath: "data", existing: true }])
    const replaced = ServiceSpec.requirement(kv, "kv", 1, { generation: 2, id: "kv-1-init" })
    expect(replaced.id).toBe("kv-1-init")
    expect(replaced.reservation?.labels?.["berth.generation"]).toBe("2")
    expect(replaced.volumes?.[0]?.persistenceId).toBe("kv-store.kv-1.g2.data")
  })

  it("counts a shared resource set once", () => {
    const spec = ServiceSpec.decodeSync({
      name: "s",
      pods: { p: { count: 1, resourceSets: { r: { cpus: 1, mem: 100 } }, tasks: {
        a: { goal: "ONCE", cmd: "init", resourceSet: "r" },
        b: { goal: "RUNNING", cmd: "run", resourceSet: "r" },
        c: { goal: "RUNNING", cmd: "side", cpus: 0.5, mem: 10 }
      } } }
    })
    expect(ServiceSpec.requirement(spec, "p", 0).resources).toMatchObject({ cpus: 1.5, mem: 110 })
  })

  it("fingerprints what instances run, not how many there are", () => {
    const scaled = ServiceSpec.decodeSync({ ...structuredClone(kv), pods: { kv: { ...kv.pods.kv!, count: 7 } } })
    expect(ServiceSpec.podFingerprint(scaled, "kv")).toBe(ServiceSpec.podFingerprint(kv, "kv"))
    const changed = ServiceSpec.decodeSync({ ...structuredClone(kv), pods: { kv: { ...kv.pods.kv!, env: { A: "1" } } } })
    expect(ServiceSpec.podFingerprint(changed, "kv")).not.toBe(ServiceSpec.podFingerprint(kv, "kv"))
  })

  it("renders templates from the environment", () => {
    expect(ServiceSpec.render("id={{ POD_INSTANCE_INDEX }} x={{MISSING}}", { POD_INSTANCE_INDEX: "2" })).toBe("id=2 x=")
  })
})
