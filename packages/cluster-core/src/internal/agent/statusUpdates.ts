import type { v1 } from "@berth/proto"
import { TaskStates } from "@berth/proto"

interface Stream {
  readonly frameworkId: string
  readonly taskId: string
  readonly pending: Array<v1.TaskStatus>
  sentAtMs: number
}

const sameUuid = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((byte, i) => byte === b[i])

/**
 * The agent's status update manager (invariant 2): per task, updates wait in order and only the
 * oldest unacknowledged one is in flight; it is resent until the scheduler acknowledges its uuid,
 * and only then does the next one go out. Pure bookkeeping: the caller does the sending.
 */
export const make = (forward: (frameworkId: string, status: v1.TaskStatus) => void) => {
  const streams = new Map<string, Stream>()
  const key = (frameworkId: string, taskId: string) => `${frameworkId}/${taskId}`

  const send = (stream: Stream, now: number) => {
    const head = stream.pending[0]
    if (head === undefined) return
    stream.sentAtMs = now
    forward(stream.frameworkId, head)
  }

  return {
    /** Queues an update; it goes out at once when nothing older is waiting for its task. */
    enqueue(frameworkId: string, status: v1.TaskStatus, now: number): void {
      const k = key(frameworkId, status.taskId)
      let stream = streams.get(k)
      if (stream === undefined) {
        stream = { frameworkId, taskId: status.taskId, pending: [], sentAtMs: 0 }
        streams.set(k, stream)
      }
      stream.pending.push(status)
      if (stream.pending.length === 1) send(stream, now)
    },
    /**
     * Handles an acknowledgement. Returns the acknowledged status when it matched the in-flight
     * update (a late or duplicated acknowledgement matches nothing and changes nothing).
     */
    acknowledge(frameworkId: string, taskId: string, uuid: Uint8Array, now: number): v1.TaskStatus | undefined {
      const stream = streams.get(key(frameworkId, taskId))
      const head = stream?.pending[0]
      if (stream === undefined || head === undefined || !sameUuid(head.uuid, uuid)) return undefined
      stream.pending.shift()
      if (stream.pending.length === 0) {
        if (TaskStates.isTerminal(head.state)) streams.delete(key(frameworkId, taskId))
      } else {
        send(stream, now)
      }
      return head
    },
    /** Resends every in-flight update older than `olderThanMs` (all of them with 0). */
    resend(now: number, olderThanMs: number): number {
      let count = 0
      for (const stream of streams.values()) {
        if (stream.pending.length > 0 && now - stream.sentAtMs >= olderThanMs) {
          send(stream, now)
          count++
        }
      }
      return count
    },
    /** Unacknowledged updates of a task, oldest first. */
    pending(frameworkId: string, taskId: string): ReadonlyArray<v1.TaskStatus> {
      return streams.get(key(frameworkId, taskId))?.pending ?? []
    },
    /** How many updates wait for an acknowledgement, across all tasks. */
    pendingCount(): number {
      let count = 0
      for (const stream of streams.values()) count += stream.pending.length
      return count
    }
  }
}

export type StatusUpdateManager = ReturnType<typeof make>
