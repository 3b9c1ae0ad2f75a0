import type { v1 } from "@berth/proto"
import type { Requirement } from "../../Requirement.ts"
import type { OfferView, Pool, ReservedPool } from "./view.ts"

export type Stage = "role" | "reservation" | "resources" | "ports" | "volumes" | "constraints"

/** A requirement with its defaults applied, as the stages read it. */
export interface Prepared {
  readonly index: number
  readonly requirement: Requirement
  readonly id: string
  readonly group: string
  readonly role: string | undefined
  readonly cpus: number
  readonly mem: number
  readonly disk: number
  readonly gpus: number
  readonly ports: ReadonlyArray<string>
  /** Ports that must be exactly these numbers, by name, in ascending port order. */
  readonly fixedPorts: ReadonlyArray<readonly [string, number]>
  /** Labels of the reservation, or undefined when the requirement uses no reservation. */
  readonly labels: ReadonlyArray<readonly [string, string]> | undefined
  readonly labelsText: string
  readonly existingReservation: boolean
  /** Scalars reserved beyond the launch when the reservation is made (`reservation.extra`). */
  readonly extra: { readonly cpus: number; readonly mem: number; readonly disk: number; readonly gpus: number }
  readonly volumes: NonNullable<Requirement["volumes"]>
  readonly constraints: ReadonlyArray<PreparedConstraint>
  readonly preferences: NonNullable<Requirement["preferences"]>
  readonly task: Partial<v1.TaskInfo> | undefined
  readonly group_: { readonly executor: v1.ExecutorInfo; readonly tasks: ReadonlyArray<v1.TaskInfo> } | undefined
}

export interface PreparedConstraint {
  readonly field: string
  readonly operator: Requirement["constraints"] extends ReadonlyArray<infer C> | undefined ? C extends { operator: infer O } ? O : never : never
  readonly value: string | undefined
  readonly regex: RegExp | undefined
  readonly count: number
  /** `hostname:UNIQUE`, `zone:GROUP_BY 3`: how reasons name the constraint. */
  readonly text: string
}

/** One requirement tried against one offer; the stages fill it in as they pass. */
export interface Attempt {
  req: Prepared
  view: OfferView
  /** The pool the resources come from (the view's free pool or a matching reservation). */
  pool: Pool
  /** The matching reservation, when one is reused. */
  reservation: ReservedPool | undefined
  /** Whether the resources must be reserved (RESERVE) before the launch. */
  reserve: boolean
}

/** What a running (or just placed) instance contributes to constraints. */
export interface Instance {
  readonly id: string
  readonly agentId: string
  readonly attributes: ReadonlyMap<string, string>
}

export type Check = (attempt: Attempt) => string | undefined
