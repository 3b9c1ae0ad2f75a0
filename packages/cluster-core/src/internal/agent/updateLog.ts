import { TaskStates, v1 } from "@berth/proto"
import * as fs from "node:fs/promises"
import { crc32 } from "node:zlib"

/**
 * The checkpoint of one task's status updates (invariant 2): an append-only log in the run's
 * checkpoint directory. Every update is appended and fsync'd before it is sent; every
 * acknowledgement is appended before the next update goes out. Replaying the log after a restart
 * gives the updates still unacknowledged, in order.
 *
 * One record per line: the CRC-32 of the JSON (8 hex digits), a space, the JSON, "\n". A crash
 * can leave the last record half-written; reading stops at the first line that is incomplete or
 * fails its checksum, and the file is cut back to the records before it, so the next append
 * starts on a clean line.
 */
export type Record =
  | { readonly _tag: "Update"; readonly status: v1.TaskStatus }
  | { readonly _tag: "Ack"; readonly uuid: Uint8Array; readonly atMs: number }
  /** The run was closed without its terminal update being acknowledged (`--recover=cleanup`). */
  | { readonly _tag: "Closed"; readonly atMs: number; readonly reason: string }

const toJson = (record: Record): unknown => {
  switch (record._tag) {
    case "Update":
      return { update: v1.TaskStatus.toJSON(record.status) }
    case "Ack":
      return { ack: Buffer.from(record.uuid).toString("base64"), atMs: record.atMs }
    case "Closed":
      return { closed: record.reason, atMs: record.atMs }
  }
}

const fromJson = (json: { update?: unknown; ack?: string; closed?: string; atMs?: number }): Record => {
  if (json.update !== undefined) return { _tag: "Update", status: v1.TaskStatus.fromJSON(json.update) }
  if (typeof json.ack === "string" && typeof json.atMs === "number") {
    return { _tag: "Ack", uuid: new Uint8Array(Buffer.from(json.ack, "base64")), atMs: json.atMs }
  }
  if (typeof json.closed === "string" && typeof json.atMs === "number") return { _tag: "Closed", atMs: json.atMs, reason: json.closed }
  throw new Error("unknown record")
}

const hex8 = (n: number) => n.toString(16).padStart(8, "0")

/** One record as it is written: "<crc32> <json>\n". */
export const encode = (record: Record): Buffer => {
  const json = Buffer.from(JSON.stringify(toJson(record)), "utf8")
  return Buffer.concat([Buffer.from(`${hex8(crc32(json))} `, "ascii"), json, Buffer.from("\n", "ascii")])
}

export interface Parsed {
  readonly records: ReadonlyArray<Record>
  /** Bytes of the complete, intact records at the start of the buffer. */
  readonly validBytes: number
  /** Why reading stopped before the end, if it did. */
  readonly problem?: string
}

/** Reads records until the end, or until a torn or corrupt one (which ends the log there). */
export const parse = (buffer: Buffer): Parsed => {
  const records: Array<Record> = []
  let offset = 0
  while (offset < buffer.length) {
    const newline = buffer.indexOf(0x0a, offset)
    if (newline < 0) return { records, validBytes: offset, problem: `a torn record at byte ${offset} (no end of line)` }
    const line = buffer.subarray(offset, newline)
    const problem = (() => {
      if (line.length < 10 || line[8] !== 0x20) return "a malformed record"
      const json = line.subarray(9)
      if (line.subarray(0, 8).toString("ascii") !== hex8(crc32(json))) return "a record failing its checksum"
      try {
        records.push(fromJson(JSON.parse(json.toString("utf8"))))
        return undefined
      } catch (error) {
        return `an unreadable record (${(error as Error).message})`
      }
    })()
    if (problem !== undefined) return { records, validBytes: offset, problem: `${problem} at byte ${offset}` }
    offset = newline + 1
  }
  return { records, validBytes: offset }
}

/** Appends records; with `sync`, returns once they are on disk (fsync). */
export const append = async (file: string, records: ReadonlyArray<Record>, sync: boolean): Promise<void> => {
  const handle = await fs.open(file, "a")
  try {
    await handle.write(Buffer.concat(records.map(encode)))
    if (sync) await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * Reads a log (none yet: no records). A torn or corrupt tail is cut off the file, so that later
 * appends follow the last intact record; `problem` says what was dropped.
 */
export const read = async (file: string): Promise<Parsed> => {
  let buffer: Buffer
  try {
    buffer = await fs.readFile(file)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { records: [], validBytes: 0 }
    throw error
  }
  const parsed = parse(buffer)
  if (parsed.validBytes < buffer.length) await fs.truncate(file, parsed.validBytes)
  return parsed.problem === undefined
    ? parsed
    : { ...parsed, problem: `${parsed.problem}; dropped the last ${buffer.length - parsed.validBytes} bytes` }
}

const sameUuid = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((byte, i) => byte === b[i])

export interface Replayed {
  /** Updates not acknowledged yet, oldest first: to be sent again, in this order. */
  readonly pending: ReadonlyArray<v1.TaskStatus>
  /** The latest update of the task, acknowledged or not. */
  readonly latest: v1.TaskStatus | undefined
  /** The latest acknowledged update. */
  readonly acknowledged: v1.TaskStatus | undefined
  /** When the run was over for the agent (its terminal update acknowledged, or closed), if it is. */
  readonly completedAtMs: number | undefined
}

/** What the records say about the task. */
export const replay = (records: ReadonlyArray<Record>): Replayed => {
  const pending: Array<v1.TaskStatus> = []
  let latest: v1.TaskStatus | undefined
  let acknowledged: v1.TaskStatus | undefined
  let completedAtMs: number | undefined
  for (const record of records) {
    switch (record._tag) {
      case "Update":
        pending.push(record.status)
        latest = record.status
        break
      case "Ack": {
        const index = pending.findIndex((status) => sameUuid(status.uuid, record.uuid))
        if (index < 0) break
        acknowledged = pending[index]!
        pending.splice(index, 1)
        if (TaskStates.isTerminal(acknowledged.state)) completedAtMs = record.atMs
        break
      }
      case "Closed":
        completedAtMs ??= record.atMs
        break
    }
  }
  return { pending, latest, acknowledged, completedAtMs }
}
