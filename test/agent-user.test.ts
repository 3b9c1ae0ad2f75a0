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
    ? "agent-user: the tests run as root and user nobody exists: tasks are switched to nobody"
    : `agent-user: switching users is not tested here (${isRoot ? "no user nobody" : "the tests do not run as root"}); only the refusals are`
)

const setup = (frameworkUser?: string) =>
  Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "berth-user-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    const master = yield* MasterSupport.start()
    const agent = yield* Agent.start({ master: master.endpoint, workDir: dir, resources: "cpus:2;mem:1024;disk:1024" })
    yield* agent.registered
    // Weakly typed support options: the user goes through to the FrameworkInfo.
    const framework = yield* Framework.open(master.endpoint, "user-test", { roles: ["*"], ...(frameworkUser === undefined ? {} : { user: frameworkUser }) })
    const sandbox = (taskId: string) => path.join(dir, "frameworks", framework.frameworkId, "executors", taskId, "runs", "latest")
    return { framework, sandbox }
  })

const task = (taskId: string, value: string, user = "") =>
  v1.TaskInfo.create({
    name: taskId,
    taskId,
    resources: [Resources.scalar("cpus", 0.1)],
    command: { shell: true, value, user }
  })

const quiet = Effect.provideService(References.MinimumLogLevel, "Warn")

describe("tasks run as an unprivileged user", () => {
  it.live.skipIf(!canSwitch)("command.user: the task runs with nobody's uid and gid, in a sandbox that is nobody's", () =>
    Effect.gen(function*() {
      const { framework, sandbox } = yield* setup()
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [
        Framework.launch([task("as-nobody", "id -u; id -g; echo $USER; touch mine", "nobody")])
      ])
      yield* framework.awaitState("as-nobody", v1.TaskState.FINISHED)
      const [uid, gid, user] = fs.readFileSync(path.join(sandbox("as-nobody"), "stdout"), "utf8").trim().split("\n")
      expect({ uid: Number(uid), gid: Number(gid), user }).toEqual({ ...nobody, user: "nobody" })
      expect(fs.statSync(path.join(sandbox("as-nobody"), "mine")).uid).toBe(nobody!.uid)
      expect(fs.statSync(sandbox("as-nobody")).uid).toBe(nobody!.uid)
      expect(framework.updates.filter((s) => s.taskId === "as-nobody").map((s) => s.state)).toEqual([
        v1.TaskState.STAGING,
        v1.TaskState.STARTING,
        v1.TaskState.RUNNING,
        v1.TaskState.FINISHED
      ])
    }).pipe(quiet), 60_000)

  it.live.skipIf(!canSwitch)("the framework's user applies to tasks that name none; a task cannot write what root owns", () =>
    Effect.gen(function*() {
      const { framework, sandbox } = yield* setup("nobody")
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [
        Framework.launch([task("fw-user", "id -u; touch /root/berth-user-test 2>/dev/null && echo wrote || echo refused")])
      ])
      yield* framework.awaitState("fw-user", v1.TaskState.FINISHED)
      expect(fs.readFileSync(path.join(sandbox("fw-user"), "stdout"), "utf8")).toBe(`${nobody!.uid}\nrefused\n`)
      expect(fs.existsSync("/root/berth-user-test")).toBe(false)
    }).pipe(quiet), 60_000)

  it.live("a user that does not exist fails the task with a reason naming the field; nothing runs", () =>
    Effect.gen(function*() {
      const { framework, sandbox } = yield* setup()
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [
        Framework.launch([task("ghost", "touch ran", "no-such-user-berth")])
      ])
      const failed = yield* framework.awaitState("ghost", v1.TaskState.FAILED)
      expect(failed.reason).toBe(v1.TaskStatus_Reason.CONTAINER_LAUNCH_FAILED)
      expect(failed.message).toBe('command.user: no user "no-such-user-berth" exists on this agent')
      expect(fs.existsSync(path.join(sandbox("ghost"), "ran"))).toBe(false)
    }).pipe(quiet), 60_000)
})
