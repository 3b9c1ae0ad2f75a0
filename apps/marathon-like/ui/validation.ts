// Maps Marathon's 422 `details[].path` (e.g. "/cpus", "/constraints(0)", "/constraints/0/2") to
// the create/edit form's fields; whatever has no field on the form goes to the alert above it.
import type { ErrorDetail } from "./api.ts"

/** `/constraints(1)/2` and `/constraints/1/2` both become `["constraints", "1", "2"]`. */
export const pathSegments = (path: string): string[] =>
  path
    .replace(/\((\d+)\)/g, "/$1")
    .split("/")
    .filter((s) => s !== "")

export interface FieldErrors {
  byField: Partial<Record<string, string>>
  constraintRows: Record<number, string>
  other: ErrorDetail[]
}

export const mapDetails = (details: ErrorDetail[]): FieldErrors => {
  const out: FieldErrors = { byField: {}, constraintRows: {}, other: [] }
  for (const d of details) {
    const [head, index] = pathSegments(d.path)
    const text = d.errors.join("; ") || "invalid"
    if (head === "constraints" && index !== undefined && /^\d+$/.test(index)) {
      out.constraintRows[Number(index)] = text
    } else if (head !== undefined && ["id", "cmd", "cpus", "mem", "instances", "constraints"].includes(head)) {
      out.byField[head] = out.byField[head] === undefined ? text : `${out.byField[head]}; ${text}`
    } else if (head === "args") {
      out.byField.cmd = text
    } else {
      out.other.push(d)
    }
  }
  return out
}

export const emptyErrors = (): FieldErrors => ({ byField: {}, constraintRows: {}, other: [] })
