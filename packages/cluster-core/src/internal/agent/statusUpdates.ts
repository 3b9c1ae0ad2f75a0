import type { v1 } from "@berth/proto"
import { TaskStates } from "@berth/proto"

interface Stream {
  readonly frameworkId: string
  readonly taskId: string
  readonly pending: Array<v1.TaskStatus>
  /** When the head was last sent (0: never, since this agent started). */
  sentAtMs: number
  /** How long to wait for its acknowledgement before sending it again. */
  retryMs: number
}

export interface Backoff {
  /** The first retry interval; each retry of the same update doubles it... */
  readonly minMs: number
  /** ...up to this. */
  readonly maxMs: number
}

/** Mesos' STATUS_UPDATE_RETRY_INTERVAL_MIN and _MAX (src/slave/constants.hpp). */
export const defaultBackoff: Backoff = { minMs: 10_000, maxMs: 600_000 }

const sameUuid = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((byte, i) => byte === b[i])

/**
 * The agent's status update manager (invariant 2): per task, updates wait in order and only the
 * oldest unacknowledged one is in flight; it is resent, with exponential backoff from `minMs` to
 * `maxMs`, until the scheduler acknowledges its uuid, and only then does the next one go out.
 * Pure bookkeeping: the caller checkpoints (before `enqueue`, and acknowledgements before
 * `acknowledge`) and does the sending.
 */
export const make = (forward: (frameworkId: string, status: v1.TaskStatus) => void, backoff: Backoff = defaultBackoff) => {
  const streams = new Map<string, Stream>()
  const key = (frameworkId: string, taskId: string) => `${frameworkId}/${taskId}`

  const streamOf = (frameworkId: string, taskId: string): Stream => {
    const k = key(frameworkId, taskId)
    let stream = streams.get(k)
    if (stream === undefined) {
      stream = { frameworkId, taskId, pending: [], sentAtMs: 0, retryMs: backoff.minMs }
      streams.set(k, stream)
    }
    return stream
  }

  /** Sends the head; `fresh` for an update sent for the first time (its backoff starts over). */
  const send = (stream: Stream, now: number, fresh: boolean) => {
    const head = stream.pending[0]
    if (head === undefined) return
    stream.retryMs = fresh ? backoff.minMs : Math.min(backoff.maxMs, stream.retryMs * 2)
    stream.sentAtMs = now
    forward(stream.frameworkId, head)
  }

  return {
    /** Queues an update; it goes out at once when nothing older is waiting for its task. */
    enqueue(frameworkId: string, status: v1.TaskStatus, now: number): void {
      const stream = streamOf(frameworkId, status.taskId)
      stream.pending.push(status)
      if (stream.pending.length === 1) send(stream, now, true)
    },
    /**
     * Puts back the unacknowledged updates of a task recovered from its checkpoint, without
     * sending them: they go out on the next `resendAll` (when the agent has registered).
     */
    restore(frameworkId: string, taskId: string, pending: ReadonlyArray<v1.TaskStatus>): void {
      if (pending.length === 0) return
      streamOf(frameworkId, taskId).pending.push(...pending)
    },
    /** Whether `uuid` is the update in flight for the task (the only one an acknowledgement can match). */
    isInFlight(frameworkId: string, taskId: string, uuid: Uint8Array): boolean {
      const head = streams.get(key(frameworkId, taskId))?.pending[0]
      return head !== undefined && sameUuid(head.uuid, uuid)
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
        send(stream, now, true)
      }
      return head
    },
    /** Resends every in-flight update whose retry interval has passed, doubling that interval. */
    retry(now: number): number {
      let count = 0
      for (const stream of streams.values()) {
        if (stream.pending.length > 0 && now - stream.sentAtMs >= stream.retryMs) {
          send(stream, now, false)
          count++
        }
      }
      return count
    },
    /** Sends every in-flight update now, with a fresh backoff: the agent (re-)registered. */
    resendAll(now: number): number {
      let count = 0
      for (const stream of streams.values()) {
        if (stream.pending.length === 0) continue
        send(stream, now, true)
        count++
      }
      return count
    },
    /** Unacknowledged updates of a task, oldest first. */
    pending(frameworkId: string, taskId: string): ReadonlyArray<v1.TaskStatus> {
      return streams.get(key(frameworkId, taskId))?.pending ?? []
    },
    /** When the in-flight update of a task is due again (for tests and metrics). */
    nextRetryAtMs(frameworkId: string, taskId: string): number | undefined {
      const stream = streams.get(key(frameworkId, taskId))
      return stream === undefined || stream.pending.length === 0 ? undefined : stream.sentAtMs + stream.retryMs
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
