/**
 * What one pod instance (or task) needs from an offer: resources with named ports, an optional
 * dynamic reservation (reused when an offer carries one with the same labels), persistent
 * volumes, a role, Marathon placement constraints and soft preferences. One Effect Schema gives
 * the type, the validation (errors name the field and the rule) and the JSON Schema for docs.
 *
 * @example
 * ```ts
 * import { Requirement } from "@berth/sdk-scheduler"
 *
 * const kv0 = Requirement.decodeSync({
 *   id: "kv-0",
 *   group: "kv",
 *   role: "kv-role",
 *   resources: { cpus: 0.5, mem: 256, ports: ["http"] },
 *   reservation: {},                       // labels default to { "berth.requirement": "kv-0" }
 *   volumes: [{ persistenceId: "kv-0-data", containerPath: "data", size: 1024 }],
 *   constraints: [{ field: "hostname", operator: "UNIQUE" }, ["zone", "GROUP_BY", "3"]],
 *   preferences: [{ field: "rack", kind: "spread", weight: 1 }]
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Result, Schema, SchemaIssue, SchemaTransformation } from "effect"

/** The label a reservation carries by default: the requirement's id. @since 0.1.0 */
export const REQUIREMENT_LABEL = "berth.requirement"

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,254}$/
const PORT_NAME = /^[a-z][a-z0-9-]{0,62}$/
const PERSISTENCE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/
const CONTAINER_PATH = /^(?!\/)(?!.*(^|\/)\.\.(\/|$))[A-Za-z0-9._/-]+$/

const NonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0, { message: "must be a finite number >= 0" }))
const Positive = Schema.Finite.check(Schema.isGreaterThan(0, { message: "must be a finite number > 0" }))

/**
 * The operators of Marathon's placement constraints.
 *
 * @since 0.1.0
 * @category constraints
 */
export const Operator = Schema.Literals(["UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS"])
/** @since 0.1.0 @category constraints */
export type Operator = typeof Operator.Type

const isRegex = (source: string): boolean => {
  try {
    new RegExp(source)
    return true
  } catch {
    return false
  }
}

const isCount = (value: string, min: number) => /^\d+$/.test(value) && Number(value) >= min

const ConstraintStruct = Schema.Struct({
  /** `hostname`, `zone`, `region` (an `@` prefix is accepted, as in Marathon) or any agent attribute. */
  field: Schema.String.check(Schema.isPattern(/^@?[A-Za-z][A-Za-z0-9_.-]*$/, { message: "must be hostname, zone, region or an attribute name" })),
  operator: Operator,
  value: Schema.optional(Schema.String)
}).check(
  Schema.makeFilter((c) => {
    const value = c.value
    switch (c.operator) {
      case "UNIQUE":
        return value === undefined || value === "" ? undefined : { path: ["value"], issue: "UNIQUE takes no value" }
      case "CLUSTER":
        return undefined
      case "GROUP_BY":
        return value === undefined || isCount(value, 1) ? undefined : { path: ["value"], issue: "GROUP_BY takes an optional integer >= 1 (the number of distinct values expected)" }
      case "MAX_PER":
        return value !== undefined && isCount(value, 1) ? undefined : { path: ["value"], issue: "MAX_PER needs an integer >= 1" }
      case "LIKE":
      case "UNLIKE":
        return value !== undefined && value !== "" && isRegex(value) ? undefined : { path: ["value"], issue: `${c.operator} needs a valid regular expression` }
      case "IS":
        return value !== undefined && value !== "" ? undefined : { path: ["value"], issue: "IS needs a value" }
    }
  })
)

/** Marathon's array form, `["hostname", "UNIQUE"]` or `["zone", "GROUP_BY", "3"]`. */
const ConstraintTuple = Schema.Union([
  Schema.Tuple([Schema.String, Schema.String]),
  Schema.Tuple([Schema.String, Schema.String, Schema.String])
])

/**
 * One hard placement constraint, in object form or Marathon's array form.
 *
 * @since 0.1.0
 * @category constraints
 */
export const Constraint = Schema.Union([
  ConstraintStruct,
  ConstraintTuple.pipe(
    Schema.decodeTo(
      ConstraintStruct,
      SchemaTransformation.transform({
        decode: (t): typeof ConstraintStruct.Encoded =>
          (t.length === 3 ? { field: t[0], operator: t[1], value: t[2] } : { field: t[0], operator: t[1] }) as typeof ConstraintStruct.Encoded,
        encode: (c): readonly [string, string] | readonly [string, string, string] =>
          c.value === undefined ? [c.field, c.operator] : [c.field, c.operator, c.value]
      })
    )
  )
])
/** @since 0.1.0 @category constraints */
export type Constraint = typeof ConstraintStruct.Type

/**
 * A soft preference: it never rejects an offer, it adds `weight × score` to the offer's fitness.
 * `spread` prefers values of `field` where the group runs fewer instances; `affinity` prefers
 * `value` (or, without a value, the values where the group already runs).
 *
 * @since 0.1.0
 * @category constraints
 */
export const Preference = Schema.Struct({
  field: Schema.String.check(Schema.isPattern(/^@?[A-Za-z][A-Za-z0-9_.-]*$/, { message: "must be hostname, zone, region or an attribute name" })),
  kind: Schema.Literals(["spread", "affinity"]),
  value: Schema.optional(Schema.String),
  weight: Positive
})
/** @since 0.1.0 @category constraints */
export type Preference = typeof Preference.Type

/**
 * A persistent volume. With `size` it is created (RESERVE + CREATE) unless the offer already
 * holds a volume with that persistence id; with `existing: true` it must already be in the offer.
 *
 * @since 0.1.0
 * @category volumes
 */
export const Volume = Schema.Struct({
  persistenceId: Schema.String.check(Schema.isPattern(PERSISTENCE_ID, { message: `must match ${PERSISTENCE_ID.source} (it names a directory)` })),
  containerPath: Schema.String.check(Schema.isPattern(CONTAINER_PATH, { message: "must be a relative path inside the sandbox (no .., not absolute)" })),
  size: Schema.optional(Positive),
  existing: Schema.optional(Schema.Boolean),
  mode: Schema.optional(Schema.Literals(["RW", "RO"]))
}).check(
  Schema.makeFilter((v) =>
    v.existing === true
      ? v.size === undefined ? undefined : { path: ["size"], issue: "an existing volume takes its size from the offer: leave size out" }
      : v.size === undefined ? { path: ["size"], issue: "a new volume needs a size in MB (or existing: true)" } : undefined
  )
)
/** @since 0.1.0 @category volumes */
export type Volume = typeof Volume.Type

const PortNumber = Schema.Int.check(
  Schema.isGreaterThanOrEqualTo(1, { message: "must be a port number from 1 to 65535" }),
  Schema.isLessThanOrEqualTo(65535, { message: "must be a port number from 1 to 65535" })
)

/**
 * Scalar resources in Mesos units (cpus, MB) and named ports taken from the offer's port ranges.
 * `ports` names ports whose numbers the offer chooses (the lowest free ones); `fixedPorts` names
 * ports that must be exactly the given numbers (Marathon's `requirePorts`, a fixed Docker
 * `hostPort`): only an offer holding every one of them fits.
 *
 * @example
 * ```ts
 * import { Requirement } from "@berth/sdk-scheduler"
 * // "http" is any free port, "metrics" must be 9102
 * Requirement.decodeSync({ id: "web-0", resources: { cpus: 1, mem: 128, ports: ["http"], fixedPorts: { metrics: 9102 } } })
 * ```
 *
 * @since 0.1.0
 * @category resources
 */
export const Resources = Schema.Struct({
  cpus: Positive,
  mem: Positive,
  disk: Schema.optional(NonNegative),
  gpus: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0, { message: "must be an integer >= 0" }))),
  ports: Schema.optional(
    Schema.Array(Schema.String.check(Schema.isPattern(PORT_NAME, { message: `must match ${PORT_NAME.source}` }))).check(
      Schema.makeFilter((names) => {
        const seen = new Set<string>()
        for (const [i, n] of names.entries()) {
          if (seen.has(n)) return { path: [i], issue: `port name "${n}" is listed twice` }
          seen.add(n)
        }
        return undefined
      })
    )
  ),
  fixedPorts: Schema.optional(
    Schema.Record(Schema.String, PortNumber).check(
      Schema.makeFilter((fixed) => {
        const seen = new Map<number, string>()
        for (const [name, port] of Object.entries(fixed)) {
          if (!PORT_NAME.test(name)) return { path: [name], issue: `port names must match ${PORT_NAME.source}` }
          const other = seen.get(port)
          if (other !== undefined) return { path: [name], issue: `port ${port} is also asked for as "${other}"` }
          seen.set(port, name)
        }
        return undefined
      })
    )
  )
}).check(
  Schema.makeFilter((r) => {
    for (const name of r.ports ?? []) {
      if (r.fixedPorts !== undefined && Object.hasOwn(r.fixedPorts, name)) {
        return { path: ["fixedPorts", name], issue: `"${name}" is also listed in ports: a port is either fixed or chosen from the offer` }
      }
    }
    return undefined
  })
)
/** @since 0.1.0 @category resources */
export type Resources = typeof Resources.Type

/**
 * A dynamic reservation the requirement's resources live in, found by its labels (every label
 * listed must be on the reservation). Without `existing` it is made (RESERVE) where none is
 * offered; with `existing: true` only an offer that carries it fits (restart in place).
 *
 * @since 0.1.0
 * @category reservations
 */
export const Reservation = Schema.Struct({
  labels: Schema.optional(Schema.Record(Schema.String.check(Schema.isMinLength(1, { message: "label keys must not be empty" })), Schema.String)),
  existing: Schema.optional(Schema.Boolean),
  /**
   * Scalars reserved with the requirement's resources but not used by its launch: they stay in
   * the reservation (and are offered again with its labels) for tasks that come later, such as a
   * pod's sidecar or a plan's task run next to its running tasks. Only reserved when the
   * reservation is made; a reused reservation already holds them.
   */
  extra: Schema.optional(Schema.Struct({
    cpus: Schema.optional(Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0, { message: "must be ≥ 0" }))),
    mem: Schema.optional(Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0, { message: "must be ≥ 0" }))),
    disk: Schema.optional(Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0, { message: "must be ≥ 0" }))),
    gpus: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0, { message: "must be an integer ≥ 0" })))
  }))
})
/** @since 0.1.0 @category reservations */
export type Reservation = typeof Reservation.Type

/**
 * Everything one pod instance needs.
 *
 * @since 0.1.0
 * @category models
 */
export const Requirement = Schema.Struct({
  /** Unique within one evaluation; the default task id and reservation label value. */
  id: Schema.String.check(Schema.isPattern(NAME, { message: `must match ${NAME.source}` })),
  /** The instances constraints count together (a pod type, an app id). Default "default". */
  group: Schema.optional(Schema.String.check(Schema.isMinLength(1, { message: "must not be empty" }))),
  /** The role the offer must be allocated to. Default: any role. */
  role: Schema.optional(Schema.String.check(Schema.isMinLength(1, { message: "must not be empty" }))),
  resources: Resources,
  reservation: Schema.optional(Reservation),
  volumes: Schema.optional(Schema.Array(Volume)),
  constraints: Schema.optional(Schema.Array(Constraint)),
  preferences: Schema.optional(Schema.Array(Preference))
}).check(
  Schema.makeFilter((r) => {
    const issues: Array<Schema.FilterIssue> = []
    const volumes = r.volumes ?? []
    if (volumes.length > 0 && r.reservation === undefined) {
      issues.push({ path: ["reservation"], issue: "persistent volumes live on reserved disk: set reservation (labels default to the requirement id)" })
    }
    if (r.reservation !== undefined && r.role === undefined) {
      issues.push({ path: ["role"], issue: "a reservation is made for a role: set role" })
    }
    const ids = new Set<string>()
    const paths = new Set<string>()
    for (const [i, v] of volumes.entries()) {
      if (ids.has(v.persistenceId)) issues.push({ path: ["volumes", i, "persistenceId"], issue: `"${v.persistenceId}" is listed twice` })
      if (paths.has(v.containerPath)) issues.push({ path: ["volumes", i, "containerPath"], issue: `"${v.containerPath}" is listed twice` })
      ids.add(v.persistenceId)
      paths.add(v.containerPath)
    }
    return issues
  })
)
/** @since 0.1.0 @category models */
export type Requirement = typeof Requirement.Type
/** The input form (constraints may be Marathon arrays). @since 0.1.0 @category models */
export type Encoded = typeof Requirement.Encoded

/**
 * A requirement that failed validation: `field` is the path (`constraints[0].value`), `rule`
 * what it must satisfy; `issues` lists every problem found.
 *
 * @since 0.1.0
 * @category errors
 */
export class RequirementError extends Schema.TaggedError<RequirementError>()("RequirementError", {
  field: Schema.String,
  rule: Schema.String,
  issues: Schema.Array(Schema.Struct({ field: Schema.String, rule: Schema.String }))
}) {
  override get message(): string {
    return this.issues.map((i) => `${i.field}: ${i.rule}`).join("; ")
  }
}

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

const pathText = (path: ReadonlyArray<unknown>): string =>
  path
    .map((p) => (typeof p === "object" && p !== null && "key" in p ? (p as { key: unknown }).key : p))
    .reduce<string>((acc, key) => (typeof key === "number" ? `${acc}[${key}]` : acc === "" ? String(key) : `${acc}.${String(key)}`), "")

const toError = (issue: SchemaIssue.Issue): RequirementError => {
  const result = formatter(issue)
  const issues = result.issues.map((i) => ({ field: pathText(i.path ?? []) || "(root)", rule: i.message }))
  const first = issues[0] ?? { field: "(root)", rule: "is invalid" }
  return new RequirementError({ field: first.field, rule: first.rule, issues })
}

/**
 * Validates unknown input (a spec file, a REST body) into a {@link Requirement}.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decode = (input: unknown): Effect.Effect<Requirement, RequirementError> =>
  Effect.mapError(Schema.decodeUnknownEffect(Requirement)(input, { errors: "all" }), (e) => toError(e.issue))

/**
 * Like {@link decode}, as a `Result`.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeResult = (input: unknown): Result.Result<Requirement, RequirementError> =>
  Result.mapError(Schema.decodeUnknownResult(Requirement)(input, { errors: "all" }), (e) => toError(e.issue))

/**
 * Like {@link decode}; throws the {@link RequirementError}.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeSync = (input: Encoded | unknown): Requirement => {
  const result = decodeResult(input)
  if (Result.isFailure(result)) throw result.failure
  return result.success
}

/** The labels that identify the requirement's reservation, defaults applied. @since 0.1.0 */
export const reservationLabels = (r: Requirement): Readonly<Record<string, string>> | undefined =>
  r.reservation === undefined ? undefined : r.reservation.labels ?? { [REQUIREMENT_LABEL]: r.id }

/** The constraint field without its `@`. @since 0.1.0 @category constraints */
export const fieldName = (field: string): string => (field.startsWith("@") ? field.slice(1) : field)
