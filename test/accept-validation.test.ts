import { describe, expect, it } from "@effect/vitest"
import { Resources, v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Framework from "./support/framework.ts"

const task = (overrides: Partial<v1.TaskInfo> = {}): v1.TaskInfo =>
  v1.TaskInfo.create({
    name: "t",
    taskId: "t-1",
    resources: [Resources.scalar("cpus", 0.5), Resources.scalar("mem", 64)],
    command: { shell: true, value: "echo hi" },
    ...overrides
  })

interface Case {
  readonly name: string
  readonly offerIds: (offer: v1.Offer, usedOfferId: string) => Array<string>
  readonly tasks: Array<v1.TaskInfo>
  readonly field: string
  readonly rule: RegExp
}

const cases: Array<Case> = [
  {
    name: "an unknown offer id",
    offerIds: () => ["no-such-offer"],
    tasks: [task()],
    field: "offerIds[0]",
    rule: /unknown, expired or already used/
  },
  {
    name: "an offer id that was already used",
    offerIds: (_, used) => [used],
    tasks: [task()],
    field: "offerIds[0]",
    rule: /can be used once/
  },
  {
    name: "the same offer twice",
    offerIds: (offer) => [offer.offerId, offer.offerId],
    tasks: [task()],
    field: "offerIds[1]",
    rule: /listed twice/
  },
  {
    name: "resources beyond the offer",
    offerIds: (offer) => [offer.offerId],
    tasks: [task({ resources: [Resources.scalar("cpus", 64), Resources.scalar("mem", 64)] })],
    field: "operations[0].launch.taskInfos[0].resources",
    rule: /needs cpus:64;mem:64 but what is left of the offers is cpus:2;mem:1024;disk:1024;ports:\[31000-32000\]$/
  },
  {
    name: "two tasks that fit alone but not together",
    offerIds: (offer) => [offer.offerId],
    tasks: [
      task({ taskId: "a", resources: [Resources.scalar("cpus", 1.5)] }),
      task({ taskId: "b", resources: [Resources.scalar("cpus", 1.5)] })
    ],
    field: "operations[0].launch.taskInfos[1].resources",
    rule: /needs cpus:1\.5 but what is left of the offers is cpus:0\.5;/
  },
  {
    name: "a task with zero cpus",
    offerIds: (offer) => [offer.offerId],
    tasks: [task({ resources: [Resources.scalar("cpus", 0), Resources.scalar("mem", 64)] })],
    field: "operations[0].launch.taskInfos[0].resources",
    rule: /cpus must be > 0/
  },
  {
    name: "a task with no cpus at all",
    offerIds: (offer) => [offer.offerId],
    tasks: [task({ resources: [Resources.scalar("mem", 64)] })],
    field: "operations[0].launch.taskInfos[0].resources",
    rule: /cpus must be > 0/
  },
  {
    name: "a task with negative cpus",
    offerIds: (offer) => [offer.offerId],
    tasks: [task({ resources: [{ ...Resources.scalar("cpus", 1), value: { $case: "scalar", value: -1 } }] })],
    field: "operations[0].launch.taskInfos[0].resources[0].scalar",
    rule: /cpus must be >= 0/
  },
  {
    name: "a task without a command",
    offerIds: (offer) => [offer.offerId],
    tasks: [(() => {
      const { command: _, ...rest } = task()
      return rest as v1.TaskInfo
    })()],
    field: "operations[0].launch.taskInfos[0].command",
    rule: /is required/
  },
  {
    name: "a task with an empty shell command",
    offerIds: (offer) => [offer.offerId],
    tasks: [task({ command: v1.CommandInfo.create({ shell: true, value: "  " }) })],
    field: "operations[0].launch.taskInfos[0].command.value",
    rule: /non-empty shell command/
  },
  {
    name: "a task without an id",
    offerIds: (offer) => [offer.offerId],
    tasks: [task({ taskId: "" })],
    field: "operations[0].launch.taskInfos[0].taskId",
    rule: /must match/
  },
  {
    name: "a task id that escapes its sandbox directory",
    offerIds: (offer) => [offer.offerId],
    tasks: [task({ taskId: "../../etc" })],
    field: "operations[0].launch.taskInfos[0].taskId",
    rule: /must match/
  },
  {
    name: "two tasks with one id",
    offerIds: (offer) => [offer.offerId],
    tasks: [task({ taskId: "dup" }), task({ taskId: "dup" })],
    field: "operations[0].launch.taskInfos[1].taskId",
    rule: /already exists/
  }
]

describe("Accept rejects bad input with a field-naming error and launches nothing", () => {
  it.live("rejects each bad Accept; the offer stays usable", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:2;mem:1024;disk:1024" })
      const framework = yield* Framework.open(cluster.master)

      // Use one offer for real first, so "already used" has a genuinely used id to try.
      const first = yield* framework.nextOffer
      yield* framework.session.accept([first.offerId], [Framework.launch([task({ taskId: "real", resources: [Resources.scalar("cpus", 0.1)] })])])
      yield* framework.awaitState("real", v1.TaskState.FINISHED)
      yield* framework.session.revive()
      const offer = yield* framework.nextOffer

      for (const c of cases) {
        const error = yield* framework.session
          .accept(c.offerIds(offer, first.offerId), [Framework.launch(c.tasks)])
          .pipe(Effect.flip)
        expect(error._tag, c.name).toBe("InvalidArgument")
        if (error._tag !== "InvalidArgument") continue
        expect(error.field, c.name).toBe(c.field)
        expect(error.rule, c.name).toMatch(c.rule)
      }

      // Nothing was launched by any of them: the master knows only the real task, and no
      // agent made a sandbox for anything else.
      const state = yield* cluster.operator.state
      expect(state.tasks.map((t) => t.info?.taskId)).toEqual(["real"])
      const executors = path.join(cluster.agents[0]!.workDir, "frameworks", framework.frameworkId, "executors")
      expect(fs.readdirSync(executors)).toEqual(["real"])

      // And the offer those Accepts named is still intact and usable.
      const ok = yield* framework.session.accept([offer.offerId], [Framework.launch([task({ taskId: "after" })])])
      expect(ok.launchedTaskIds).toEqual(["after"])
      yield* framework.awaitState("after", v1.TaskState.FINISHED)
    }))

  it.live("rejects operations this master does not serve yet, naming the operation", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const framework = yield* Framework.open(cluster.master)
      const offer = yield* framework.nextOffer
      const error = yield* framework.session
        .accept([offer.offerId], [{ operationId: "", kind: { $case: "reserve", value: { resources: [] } } }])
        .pipe(Effect.flip)
      expect(error.message).toMatch(/operations\[0\]\.reserve/)
      const state = yield* cluster.operator.state
      expect(state.tasks).toEqual([])
    }))
})
