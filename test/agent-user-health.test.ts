// A task run as another user has its COMMAND health and readiness checks run as that user too:
// they see what the task sees and get no more rights (they used to run as the agent's user, root).
import { describe, expect, it } from "@effect/vitest"
import { Resources, v1 } from "@berth/proto"
import { Agent } from "@berth/cluster-core"
import { Effect, References } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Framework from "./support/framework.ts"
import * as MasterSupport from "./support/master.ts"

const isRoot = process.getuid?.() === 0
const nobody = (() => {
  const line = fs.readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith("nobody:"))
  return line === undefined ? undefined : { uid: Number(line.split(":")[2]), gid: Number(line.split(":")[3]) }
})()
const canSwitch = isRoot && nobody !== undefined
console.log(
  canSwitch
    ? "agent-user-health: the tests run as root and user nobody exists: checks are run as nobody"
    : `agent-user-health: not tested here (${isRoot ? "no user nobody" : "the tests do not run as root"})`
)

const check = (value: string) =>
  v1.HealthCheck.create({
    type: v1.HealthCheck_Type.COMMAND,
    command: { shell: true, value },
    delaySeconds: 0.05,
    intervalSeconds: 0.2,
    timeoutSeconds: 10,
    gracePeriodSeconds: 0.01,
    consecutiveFailures: 3
  })

describe("health checks of a task run as another user", () => {
  it.live.skipIf(!canSwitch)("the COMMAND health check and the readiness check run with the task's uid, gid and USER", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "berth-user-health-"))),
        (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
      )
      const master = yield* MasterSupport.start()
      const agent = yield* Agent.start({ master: master.endpoint, workDir: dir, resources: "cpus:2;mem:1024;disk:1024" })
      yield* agent.registered
      const framework = yield* Framework.open(master.endpoint, "user-health")
      const sandbox = path.join(dir, "frameworks", framework.frameworkId, "executors", "checked", "runs", "latest")
      const task = v1.TaskInfo.create({
        name: "checked",
        taskId: "checked",
        resources: [Resources.scalar("cpus", 0.1)],
        command: { shell: true, value: "sleep 30", user: "nobody" },
        // Passes only as nobody; writes what it ran as into the (nobody's) sandbox.
        healthCheck: check(`echo "$(id -u) $(id -g) $USER" > health-ran-as; test "$(id -u)" = "${nobody!.uid}"`),
        // A file root could write but nobody cannot: the readiness check must fail as nobody.
        check: check("touch /root/berth-readiness-as-root")
      })
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [Framework.launch([task])])
      yield* framework.awaitState("checked", v1.TaskState.RUNNING)
      for (let i = 0; i < 300; i++) {
        const updates = framework.updates.filter((u) => u.taskId === "checked")
        if (updates.some((u) => u.healthy === true) && updates.some((u) => u.ready === false)) break
        yield* Effect.sleep("50 millis")
      }
      const updates = framework.updates.filter((u) => u.taskId === "checked")
      const health = updates.find((u) => u.healthy !== undefined)
      expect(health?.healthy, health?.message).toBe(true)
      expect(fs.readFileSync(path.join(sandbox, "health-ran-as"), "utf8")).toBe(`${nobody!.uid} ${nobody!.gid} nobody\n`)
      expect(fs.statSync(path.join(sandbox, "health-ran-as")).uid).toBe(nobody!.uid)
      const readiness = updates.find((u) => u.ready !== undefined)
      expect(readiness?.ready, readiness?.message).toBe(false)
      expect(readiness?.message).toMatch(/Permission denied/)
      expect(fs.existsSync("/root/berth-readiness-as-root")).toBe(false)
      yield* framework.session.kill("checked")
      yield* framework.awaitState("checked", v1.TaskState.KILLED)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Warn")), 60_000)
})
