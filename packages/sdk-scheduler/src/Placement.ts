/**
 * Placement: which offer each requirement goes to, and the exact operations to send. A pure
 * function of the requirements, the offers and what already runs; no I/O, no clock, no
 * randomness, so the same input always gives the same answer.
 *
 * Every offer goes through the stages in order (`role`, `reservation`, `resources`, `ports`,
 * `volumes`, `constraints`); the first stage that refuses it is recorded with its reason. Of the
 * offers that pass, the fittest wins (bin-pack or spread, plus soft preferences; the first
 * offer wins a tie). Requirements are placed in order and share offers: resources are consumed
 * and constraints counted as each is placed. The `ports` stage checks fixed ports
 * (`resources.fixedPorts`: exactly these numbers) before counting free ports for the named ones.
 *
 * @example
 * ```ts
 * import { Placement, Requirement } from "@berth/sdk-scheduler"
 *
 * const evaluation = Placement.evaluate(
 *   [Requirement.decodeSync({ id: "kv-0", group: "kv", resources: { cpus: 1, mem: 256, ports: ["http"] },
 *                             constraints: [["hostname", "UNIQUE"]] })],
 *   offers,
 *   { running: [{ id: "kv-1", group: "kv", agentId: "agent-2", attributes: { hostname: "h2" } }] }
 * )
 * for (const accept of evaluation.accepts) session.accept([accept.offerId], accept.operations)
 * Placement.whyNot(evaluation) // [{ requirementId, placed, rejections: [{ offerId, stage, reason }] }]
 * ```
 *
 * @since 0.1.0
 */
import type { v1 } from "@berth/proto"
import { Schema } from "effect"
import type { Requirement } from "./Requirement.ts"
import * as Constraints from "./internal/placement/constraints.ts"
import { commit } from "./internal/placement/commit.ts"
import * as Fitness from "./internal/placement/fitness.ts"
import * as Ports from "./internal/placement/ports.ts"
import * as Reservation from "./internal/placement/reservation.ts"
import * as Resources from "./internal/placement/resources.ts"
import * as Role from "./internal/placement/role.ts"
import type { Attempt, Instance, Prepared, PreparedConstraint } from "./internal/placement/types.ts"
import * as Volumes from "./internal/placement/volumes.ts"
import { makeView, type OfferView } from "./internal/placement/view.ts"

/**
 * The stages, in the order an offer goes through them.
 *
 * @since 0.1.0
 * @category why not
 */
export const Stage = Schema.Literals(["role", "reservation", "resources", "ports", "volumes", "constraints"])
/** @since 0.1.0 @category why not */
export type Stage = typeof Stage.Type

/**
 * Why one offer did not take one requirement: the first stage that refused it, and why
 * (`hostname:UNIQUE: already runs kv-1 on agent-2 (hostname h2)`).
 *
 * @since 0.1.0
 * @category why not
 */
export const Rejection = Schema.Struct({
  offerId: Schema.String,
  agentId: Schema.String,
  hostname: Schema.String,
  stage: Stage,
  reason: Schema.String
})
/** @since 0.1.0 @category why not */
export type Rejection = typeof Rejection.Type

/**
 * "Why is this not running", as data: per requirement, whether (and where) it was placed and
 * every offer that refused it, stage by stage. Serialise it with `Schema.encodeSync(WhyNot)`.
 *
 * @since 0.1.0
 * @category why not
 */
export const WhyNot = Schema.Struct({
  requirementId: Schema.String,
  placed: Schema.Boolean,
  offerId: Schema.optional(Schema.String),
  agentId: Schema.optional(Schema.String),
  rejections: Schema.Array(Rejection)
})
/** @since 0.1.0 @category why not */
export type WhyNot = typeof WhyNot.Type

/**
 * A requirement with the task (LAUNCH) or task group (LAUNCH_GROUP) to launch. Without `task`
 * and `group`, a LAUNCH of a task named and identified by the requirement's id (no command:
 * set one). With `group`, a task that declares scalar resources (`cpus`, `mem`, `disk`, `gpus`)
 * gets those amounts out of the requirement's resources (with their reservation); what is left,
 * with the ports and volumes, goes on the group's first task (every task of the group shares the
 * sandbox and its volumes). The executor is sent with no resources of its own (the default
 * executor runs inside the agent).
 *
 * @since 0.1.0
 * @category models
 */
export interface Request {
  readonly requirement: Requirement
  readonly task?: Partial<v1.TaskInfo> | undefined
  readonly group?: { readonly executor: v1.ExecutorInfo; readonly tasks: ReadonlyArray<v1.TaskInfo> } | undefined
}

/**
 * An instance that already runs (or is being launched), counted by constraints and spread.
 * `attributes` holds `hostname`, `zone`, `region` and any other attribute as text; when it is
 * left out, the attributes of an offer from the same agent are used.
 *
 * @since 0.1.0
 * @category models
 */
export interface Running {
  readonly id: string
  readonly group?: string | undefined
  readonly agentId: string
  readonly attributes?: Readonly<Record<string, string>> | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Context {
  readonly running?: ReadonlyArray<Running> | undefined
  /** Bin-pack (fill the fullest offer that fits, the default) or spread (the emptiest). */
  readonly fitness?: Fitness.Strategy | undefined
  /** The principal dynamic reservations and volumes are made for. */
  readonly principal?: string | undefined
  /** Ids for the operations (for UPDATE_OPERATION_STATUS feedback); none by default. */
  readonly operationId?: ((requirementId: string, kind: "reserve" | "create" | "launch") => string) | undefined
}

/**
 * A requirement placed on an offer: `operations` go, in order, into the Accept of `offerId`
 * (see {@link Evaluation.accepts}, which merges requirements sharing an offer).
 *
 * @since 0.1.0
 * @category models
 */
export interface Placed {
  readonly _tag: "Placed"
  readonly requirementId: string
  readonly offerId: string
  readonly agentId: string
  readonly hostname: string
  readonly operations: ReadonlyArray<v1.Operation>
  /** The port assigned to each named port (fixed ports included, under their names). */
  readonly ports: Readonly<Record<string, number>>
  /** Whether the operations make the reservation (RESERVE), rather than reuse one. */
  readonly reserved: boolean
  /** Persistence ids of the volumes the operations create. */
  readonly createdVolumes: ReadonlyArray<string>
  /** Everything the launched task holds (resources, ports, volumes). */
  readonly resources: ReadonlyArray<v1.Resource>
  readonly fitness: number
  readonly rejections: ReadonlyArray<Rejection>
}

/**
 * A requirement no offer could take, with every offer's reason.
 *
 * @since 0.1.0
 * @category models
 */
export interface Unplaced {
  readonly _tag: "Unplaced"
  readonly requirementId: string
  readonly rejections: ReadonlyArray<Rejection>
}

/** @since 0.1.0 @category models */
export type Outcome = Placed | Unplaced

/**
 * @since 0.1.0
 * @category models
 */
export interface Evaluation {
  /** One per requirement, in the order given. */
  readonly outcomes: ReadonlyArray<Outcome>
  /** One Accept per used offer, in offer order, with the operations of every requirement placed on it. */
  readonly accepts: ReadonlyArray<{ readonly offerId: string; readonly agentId: string; readonly operations: ReadonlyArray<v1.Operation> }>
  /** Offers nothing was placed on (to decline). */
  readonly unused: ReadonlyArray<string>
}

const prepareConstraint = (c: NonNullable<Requirement["constraints"]>[number]): PreparedConstraint => {
  const field = c.field.startsWith("@") ? c.field.slice(1) : c.field
  const value = c.value === "" ? undefined : c.value
  const needsRegex = c.operator === "LIKE" || c.operator === "UNLIKE"
  return {
    field,
    operator: c.operator,
    value,
    regex: needsRegex ? new RegExp(`^(?:${value})$`) : undefined,
    count: (c.operator === "GROUP_BY" || c.operator === "MAX_PER") && value !== undefined ? Number(value) : 0,
    text: `${field}:${c.operator}${value === undefined ? "" : ` ${value}`}`
  }
}

const prepare = (input: Requirement | Request, index: number): Prepared => {
  const request: Request = "requirement" in input ? input : { requirement: input }
  const r = request.requirement
  const labels = r.reservation === undefined
    ? undefined
    : Object.entries(r.reservation.labels ?? { "berth.requirement": r.id }).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return {
    index,
    requirement: r,
    id: r.id,
    group: r.group ?? "default",
    role: r.role,
    cpus: r.resources.cpus,
    mem: r.resources.mem,
    disk: r.resources.disk ?? 0,
    gpus: r.resources.gpus ?? 0,
    ports: r.resources.ports ?? [],
    fixedPorts: Object.entries(r.resources.fixedPorts ?? {}).sort(([, a], [, b]) => a - b),
    labels,
    labelsText: labels === undefined ? "" : labels.map(([k, v]) => `${k}=${v}`).join(","),
    existingReservation: r.reservation?.existing === true,
    extra: {
      cpus: r.reservation?.extra?.cpus ?? 0,
      mem: r.reservation?.extra?.mem ?? 0,
      disk: r.reservation?.extra?.disk ?? 0,
      gpus: r.reservation?.extra?.gpus ?? 0
    },
    volumes: r.volumes ?? [],
    constraints: (r.constraints ?? []).map(prepareConstraint),
    preferences: r.preferences ?? [],
    task: request.task,
    group_: request.group
  }
}

const STAGES: ReadonlyArray<readonly [Stage, (a: Attempt) => string | undefined]> = [
  ["role", Role.check],
  ["reservation", Reservation.check],
  ["resources", Resources.check],
  ["ports", Ports.check],
  ["volumes", Volumes.check]
]

/**
 * Places each requirement on the fittest offer that passes every stage. See the module docs.
 *
 * @since 0.1.0
 * @category evaluation
 */
export const evaluate = (
  requirements: ReadonlyArray<Requirement | Request>,
  offers: ReadonlyArray<v1.Offer>,
  context: Context = {}
): Evaluation => {
  const views: Array<OfferView> = offers.map(makeView)
  const byAgent = new Map<string, OfferView>()
  for (const view of views) if (!byAgent.has(view.offer.agentId)) byAgent.set(view.offer.agentId, view)
  const state = new Constraints.State()
  for (const task of context.running ?? []) {
    const attributes = task.attributes !== undefined
      ? new Map(Object.entries(task.attributes))
      : byAgent.get(task.agentId)?.attributes ?? new Map<string, string>()
    state.add(task.group ?? "default", { id: task.id, agentId: task.agentId, attributes })
  }
  const strategy = context.fitness ?? "binpack"
  const options = { principal: context.principal ?? "", operationId: context.operationId }
  const outcomes: Array<Outcome> = []

  for (let i = 0; i < requirements.length; i++) {
    const req = prepare(requirements[i]!, i)
    const rejections: Array<Rejection> = []
    const attempt: Attempt = { req, view: views[0]!, pool: views[0]?.free as never, reservation: undefined, reserve: false }
    let best = -1
    let bestScore = -Infinity
    let bestReservation: Attempt["reservation"]
    let bestReserve = false
    let bestPool: Attempt["pool"] | undefined
    for (let o = 0; o < views.length; o++) {
      const view = views[o]!
      attempt.view = view
      let failed: Stage | undefined
      let reason: string | undefined
      for (let s = 0; s < STAGES.length; s++) {
        reason = STAGES[s]![1](attempt)
        if (reason !== undefined) {
          failed = STAGES[s]![0]
          break
        }
      }
      if (failed === undefined && req.constraints.length > 0) {
        reason = Constraints.check(attempt, state)
        if (reason !== undefined) failed = "constraints"
      }
      if (failed !== undefined) {
        rejections.push({ offerId: view.offer.offerId, agentId: view.offer.agentId, hostname: view.offer.hostname, stage: failed, reason: reason! })
        continue
      }
      const score = Fitness.score(attempt, strategy, state)
      if (score > bestScore + 1e-12) {
        best = o
        bestScore = score
        bestReservation = attempt.reservation
        bestReserve = attempt.reserve
        bestPool = attempt.pool
      }
    }
    if (best < 0) {
      outcomes.push({ _tag: "Unplaced", requirementId: req.id, rejections })
      continue
    }
    const view = views[best]!
    attempt.view = view
    attempt.reservation = bestReservation
    attempt.reserve = bestReserve
    attempt.pool = bestPool!
    const done = commit(attempt, options)
    const instance: Instance = { id: req.id, agentId: view.offer.agentId, attributes: view.attributes }
    state.add(req.group, instance)
    outcomes.push({
      _tag: "Placed",
      requirementId: req.id,
      offerId: view.offer.offerId,
      agentId: view.offer.agentId,
      hostname: view.offer.hostname,
      operations: done.operations,
      ports: done.ports,
      reserved: done.reserved,
      createdVolumes: done.created,
      resources: done.resources,
      fitness: bestScore,
      rejections
    })
  }

  const accepts: Array<{ offerId: string; agentId: string; operations: ReadonlyArray<v1.Operation> }> = []
  const unused: Array<string> = []
  for (const view of views) {
    if (view.operations.length > 0) accepts.push({ offerId: view.offer.offerId, agentId: view.offer.agentId, operations: view.operations })
    else unused.push(view.offer.offerId)
  }
  return { outcomes, accepts, unused }
}

/**
 * The "why is this not running" records of an evaluation, as {@link WhyNot} data.
 *
 * @since 0.1.0
 * @category why not
 */
export const whyNot = (evaluation: Evaluation): Array<WhyNot> =>
  evaluation.outcomes.map((o) =>
    o._tag === "Placed"
      ? { requirementId: o.requirementId, placed: true, offerId: o.offerId, agentId: o.agentId, rejections: o.rejections }
      : { requirementId: o.requirementId, placed: false, rejections: o.rejections }
  )

/**
 * The stage each offer failed at, counted, for a one-line summary (`{ constraints: 7, resources: 2 }`).
 *
 * @since 0.1.0
 * @category why not
 */
export const summarize = (rejections: ReadonlyArray<Rejection>): Partial<Record<Stage, number>> => {
  const out: Partial<Record<Stage, number>> = {}
  for (const r of rejections) out[r.stage] = (out[r.stage] ?? 0) + 1
  return out
}
