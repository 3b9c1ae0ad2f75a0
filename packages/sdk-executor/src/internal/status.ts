import { randomUUID } from "node:crypto"
import { v1 } from "@berth/proto"
import type { StatusInit } from "../ExecutorSession.ts"

/** The ids every status of one executor carries. */
export interface Origin {
  readonly executorId: string
  readonly agentId: string
}

/** A random RFC 4122 version 4 uuid as its 16 bytes, which is what the wire carries. */
export const uuidBytes = (): Buffer => Buffer.from(randomUUID().replaceAll("-", ""), "hex")

/** The complete status for `init`; the caller supplies the time so that it comes from `Clock`. */
export const makeStatus = (init: StatusInit, origin: Origin, timestampMs: number): v1.TaskStatus => {
  const status = v1.TaskStatus.create({
    taskId: init.taskId,
    state: init.state,
    message: init.message ?? "",
    reason: init.reason ?? v1.TaskStatus_Reason.UNSPECIFIED,
    source: v1.TaskStatus_Source.EXECUTOR,
    executorId: origin.executorId,
    agentId: origin.agentId,
    timestampMs,
    uuid: uuidBytes()
  })
  if (init.data !== undefined) status.data = Buffer.from(init.data)
  if (init.healthy !== undefined) status.healthy = init.healthy
  if (init.ready !== undefined) status.ready = init.ready
  if (init.exitCode !== undefined) status.exitCode = init.exitCode
  return status
}
