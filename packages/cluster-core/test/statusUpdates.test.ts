import { afterAll, describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as StatusUpdates from "../src/internal/agent/statusUpdates.ts"
import * as UpdateLog from "../src/internal/agent/updateLog.ts"

let counter = 0
const status = (taskId: string, state: v1.TaskState): v1.TaskStatus =>
  v1.TaskStatus.create({ taskId, state, uuid: new Uint8Array([++counter, 0, 0, 7]), message: `${taskId} ${state}`, healthy: true })

const tempDirs: Array<string> = []
const tempFile = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "berth-log-"))
  tempDirs.push(dir)
  return path.join(dir, "updates")
}
afterAll(() => {
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true })
})

describe("the status update log (checkpoint)", () => {
  it("replays updates and acknowledgements: pending in order, latest, completion time", async () => {
    const file = tempFile()
    const [starting, running, finished] = [status("t", v1.TaskState.STARTING), status("t", v1.TaskState.RUNNING), status("t", v1.TaskState.FINISHED)]
    await UpdateLog.append(file, [{ _tag: "Update", status: starting }, { _tag: "Update", status: running }], true)
    await UpdateLog.append(file, [{ _tag: "Ack", uuid: starting.uuid, atMs: 10 }], false)
    await UpdateLog.append(file, [{ _tag: "Update", status: finished }], true)
    let replayed = UpdateLog.replay((await UpdateLog.read(file)).records)
    expect(replayed.pending).toEqual([running, finished])
    expect(replayed.latest).toEqual(finished)
    expect(replayed.acknowledged).toEqual(starting)
    expect(replayed.completedAtMs).toBeUndefined()

    await UpdateLog.append(file, [{ _tag: "Ack", uuid: running.uuid, atMs: 20 }, { _tag: "Ack", uuid: finished.uuid, atMs: 30 }], false)
    replayed = UpdateLog.replay((await UpdateLog.read(file)).records)
    expect(replayed.pending).toEqual([])
    expect(replayed.completedAtMs).toBe(30)
    // A missing log is an empty one.
    expect(await UpdateLog.read(path.join(path.dirname(file), "none"))).toEqual({ records: [], validBytes: 0 })
  })

  it("a half-written last record is ignored, not fatal, and cut off so later appends stay readable", async () => {
    const file = tempFile()
    const [a, b, c] = [status("t", v1.TaskState.STARTING), status("t", v1.TaskState.RUNNING), status("t", v1.TaskState.FAILED)]
    await UpdateLog.append(file, [{ _tag: "Update", status: a }, { _tag: "Update", status: b }], true)
    const intact = fs.statSync(file).size
    // Every possible tear of the next record: a prefix of it, without its end of line.
    const next = UpdateLog.encode({ _tag: "Update", status: c })
    for (let cut = 1; cut < next.length; cut++) {
      fs.truncateSync(file, intact)
      fs.appendFileSync(file, next.subarray(0, cut))
      const parsed = await UpdateLog.read(file)
      expect(parsed.records.map((r) => r._tag === "Update" && r.status.state)).toEqual([v1.TaskState.STARTING, v1.TaskState.RUNNING])
      expect(parsed.problem).toMatch(/torn record|malformed|checksum|unreadable/)
      expect(fs.statSync(file).size).toBe(intact)
    }
    // After the repair, appending works as if the torn record never was.
    await UpdateLog.append(file, [{ _tag: "Update", status: c }], true)
    const parsed = await UpdateLog.read(file)
    expect(parsed.problem).toBeUndefined()
    expect(UpdateLog.replay(parsed.records).pending).toEqual([a, b, c])
  })

  it("a corrupt record (bad checksum) ends the log there; garbage and zero-filled tails too", () => {
    const good = UpdateLog.encode({ _tag: "Update", status: status("t", v1.TaskState.RUNNING) })
    const bad = Buffer.from(good)
    bad[20] = bad[20]! ^ 0x01 // one bit flipped inside the JSON
    const later = UpdateLog.encode({ _tag: "Ack", uuid: new Uint8Array([1]), atMs: 1 })
    const parsed = UpdateLog.parse(Buffer.concat([good, bad, later]))
    expect(parsed.records).toHaveLength(1)
    expect(parsed.validBytes).toBe(good.length)
    expect(parsed.problem).toMatch(/checksum|unreadable/)

    expect(UpdateLog.parse(Buffer.concat([good, Buffer.alloc(64)])).records).toHaveLength(1)
    expect(UpdateLog.parse(Buffer.concat([good, Buffer.from("not a record\n")])).validBytes).toBe(good.length)
    expect(UpdateLog.parse(Buffer.alloc(0))).toEqual({ records: [], validBytes: 0 })
  })

  it("round-trips every field of a status and the closed record", () => {
    const full = v1.TaskStatus.create({
      taskId: "t",
      state: v1.TaskState.KILLED,
      message: "bye \n \" ✓",
      reason: v1.TaskStatus_Reason.AGENT_DRAINING,
      source: v1.TaskStatus_Source.EXECUTOR,
      agentId: "a",
      executorId: "t",
      timestampMs: 1_700_000_000_123,
      uuid: new Uint8Array([255, 0, 1]),
      healthy: false,
      ready: true,
      exitCode: 143,
      data: new Uint8Array([1, 2, 3])
    })
    const parsed = UpdateLog.parse(
      Buffer.concat([UpdateLog.encode({ _tag: "Update", status: full }), UpdateLog.encode({ _tag: "Closed", atMs: 5, reason: "cleanup" })])
    )
    expect(parsed.records).toEqual([{ _tag: "Update", status: full }, { _tag: "Closed", atMs: 5, reason: "cleanup" }])
    expect(UpdateLog.replay(parsed.records).completedAtMs).toBe(5)
  })
})

describe("the status update manager", () => {
  const make = (backoff = { minMs: 10_000, maxMs: 600_000 }) => {
    const sent: Array<v1.TaskStatus> = []
    return { sent, updates: StatusUpdates.make((_, s) => sent.push(s), backoff) }
  }

  it("sends one update per task at a time, in order, and the next only after the acknowledgement", () => {
    const { sent, updates } = make()
    const [a, b, c] = [status("t", v1.TaskState.STARTING), status("t", v1.TaskState.RUNNING), status("t", v1.TaskState.FINISHED)]
    const other = status("u", v1.TaskState.STARTING)
    updates.enqueue("f", a, 0)
    updates.enqueue("f", b, 0)
    updates.enqueue("f", other, 0)
    updates.enqueue("f", c, 0)
    expect(sent).toEqual([a, other])
    expect(updates.acknowledge("f", "t", b.uuid, 1)).toBeUndefined() // not in flight
    expect(updates.isInFlight("f", "t", a.uuid)).toBe(true)
    expect(updates.acknowledge("f", "t", a.uuid, 1)).toEqual(a)
    expect(updates.acknowledge("f", "t", a.uuid, 1)).toBeUndefined() // a duplicate
    expect(updates.acknowledge("f", "t", b.uuid, 2)).toEqual(b)
    expect(sent).toEqual([a, other, b, c])
    expect(updates.acknowledge("f", "t", c.uuid, 3)).toEqual(c)
    expect(updates.pendingCount()).toBe(1)
  })

  it("retries with exponential backoff from min to max, starting over for each new update", () => {
    const { sent, updates } = make({ minMs: 10_000, maxMs: 600_000 })
    const [a, b] = [status("t", v1.TaskState.RUNNING), status("t", v1.TaskState.FINISHED)]
    updates.enqueue("f", a, 0)
    updates.enqueue("f", b, 0)
    const times: Array<number> = []
    for (let now = 0; now <= 2_000_000; now += 1000) {
      if (updates.retry(now) > 0) times.push(now)
    }
    // 10 s, then 20, 40, 80, 160, 320, then capped at 600 s.
    expect(times.slice(0, 8)).toEqual([10_000, 30_000, 70_000, 150_000, 310_000, 630_000, 1_230_000, 1_830_000])
    expect(sent.every((s) => s === a)).toBe(true)
    updates.acknowledge("f", "t", a.uuid, 2_000_000)
    expect(sent.at(-1)).toBe(b)
    expect(updates.nextRetryAtMs("f", "t")).toBe(2_010_000)
  })

  it("restored updates wait for the registration, then go out oldest first with a fresh backoff", () => {
    const { sent, updates } = make({ minMs: 500, maxMs: 1000 })
    const [a, b] = [status("t", v1.TaskState.RUNNING), status("t", v1.TaskState.FAILED)]
    updates.restore("f", "t", [a, b])
    expect(sent).toEqual([])
    expect(updates.pending("f", "t")).toEqual([a, b])
    expect(updates.resendAll(100)).toBe(1)
    expect(sent).toEqual([a])
    expect(updates.nextRetryAtMs("f", "t")).toBe(600)
    updates.acknowledge("f", "t", a.uuid, 200)
    expect(sent).toEqual([a, b])
  })
})
