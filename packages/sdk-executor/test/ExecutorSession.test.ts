import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import { TestClock } from "effect/testing"
import { v1 } from "@berth/proto"
import { ExecutorSession } from "@berth/sdk-executor"

const ids = { frameworkId: "fw-1", executorId: "ex-1", agentId: "ag-1" } as const

describe("ExecutorSession.makeInProcess", () => {
  it.effect("update stamps a full status, hands it to the transport and returns it", () =>
    Effect.gen(function*() {
      const sent: Array<v1.TaskStatus> = []
      const inProcess = yield* ExecutorSession.makeInProcess({
        ...ids,
        onUpdate: (status) => Effect.sync(() => void sent.push(status))
      })
      yield* TestClock.setTime(1_700_000_000_123)
      const first = yield* inProcess.session.update({
        taskId: "t1",
        state: v1.TaskState.FAILED,
        message: "Command exited with status 3",
        reason: v1.TaskStatus_Reason.COMMAND_EXECUTOR_FAILED,
        healthy: false,
        exitCode: 3,
        data: new Uint8Array([1, 2, 3])
      })
      yield* TestClock.adjust("2 seconds")
      const second = yield* inProcess.session.update({ taskId: "t1", state: v1.TaskState.RUNNING })

      expect(sent).toEqual([first, second])
      expect(first).toMatchObject({
        taskId: "t1",
        state: v1.TaskState.FAILED,
        message: "Command exited with status 3",
        reason: v1.TaskStatus_Reason.COMMAND_EXECUTOR_FAILED,
        source: v1.TaskStatus_Source.EXECUTOR,
        executorId: "ex-1",
        agentId: "ag-1",
        timestampMs: 1_700_000_000_123,
        healthy: false,
        exitCode: 3
      })
      expect([...first.data]).toEqual([1, 2, 3])
      expect(second.timestampMs).toBe(1_700_000_002_123)
      expect(second.healthy).toBeUndefined()
      expect(second.exitCode).toBeUndefined()
      expect(second.reason).toBe(v1.TaskStatus_Reason.UNSPECIFIED)
      for (const status of [first, second]) {
        expect(status.uuid.length).toBe(16)
        // RFC 4122 version 4, variant 10xx: a real uuid, not just any 16 bytes.
        expect(status.uuid[6]! >> 4).toBe(4)
        expect(status.uuid[8]! >> 6).toBe(2)
      }
      expect(Buffer.from(first.uuid).equals(second.uuid)).toBe(false)
      // The wire form round-trips, so the gRPC transport can send exactly this.
      const decoded = v1.TaskStatus.decode(v1.TaskStatus.encode(first).finish())
      expect({ ...decoded, uuid: [...decoded.uuid], data: [...decoded.data] })
        .toEqual({ ...first, uuid: [...first.uuid], data: [...first.data] })
    }))

  it.effect("events arrive in order and end after `end`; messages reach onMessage", () =>
    Effect.gen(function*() {
      const messages: Array<string> = []
      const inProcess = yield* ExecutorSession.makeInProcess({
        ...ids,
        onUpdate: () => Effect.void,
        onMessage: (data) => Effect.sync(() => void messages.push(new TextDecoder().decode(data)))
      })
      yield* inProcess.send({ $case: "kill", value: { taskId: "t1", reason: 0 } })
      yield* inProcess.send({ $case: "shutdown", value: { gracePeriodSeconds: 2 } })
      yield* inProcess.end
      yield* inProcess.send({ $case: "heartbeat", value: {} })
      const events = yield* Stream.runCollect(inProcess.session.events)
      expect(events).toEqual([
        { $case: "kill", value: { taskId: "t1", reason: 0 } },
        { $case: "shutdown", value: { gracePeriodSeconds: 2 } }
      ])
      yield* inProcess.session.message(new TextEncoder().encode("hello scheduler"))
      expect(messages).toEqual(["hello scheduler"])
      expect(inProcess.session.frameworkId).toBe("fw-1")
    }))

  it.effect("layerInProcess provides the session", () =>
    Effect.gen(function*() {
      const inProcess = yield* ExecutorSession.makeInProcess({ ...ids, onUpdate: () => Effect.void })
      const session = yield* Effect.provide(
        Effect.gen(function*() {
          return yield* ExecutorSession.ExecutorSession
        }),
        ExecutorSession.layerInProcess(inProcess)
      )
      expect(session).toBe(inProcess.session)
      // Without onMessage, messages go nowhere rather than failing.
      yield* session.message(new Uint8Array([1]))
    }))
})
