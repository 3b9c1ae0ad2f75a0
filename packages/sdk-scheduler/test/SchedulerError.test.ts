import { Metadata, status } from "@grpc/grpc-js"
import { describe, expect, it } from "@effect/vitest"
import { SchedulerError } from "@berth/sdk-scheduler"

const serviceError = (code: status, details: string, trailers: Record<string, string> = {}) => {
  const metadata = new Metadata()
  for (const [key, value] of Object.entries(trailers)) metadata.set(key, value)
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details, metadata })
}

describe("SchedulerError.fromGrpc", () => {
  it("INVALID_ARGUMENT prefers the berth-field and berth-rule trailers over the message", () => {
    const error = SchedulerError.fromGrpc(
      serviceError(status.INVALID_ARGUMENT, "offer_ids[0]: must not be empty", {
        "berth-field": "operations[1].launch.task_infos[0].task_id",
        "berth-rule": "must be unique within the framework"
      }),
      "Accept"
    )
    expect(error).toBeInstanceOf(SchedulerError.InvalidArgument)
    expect(error).toMatchObject({
      _tag: "InvalidArgument",
      call: "Accept",
      field: "operations[1].launch.task_infos[0].task_id",
      rule: "must be unique within the framework",
      message: "offer_ids[0]: must not be empty"
    })
  })

  it("INVALID_ARGUMENT without trailers splits the message on the first \": \"", () => {
    const error = SchedulerError.fromGrpc(
      serviceError(status.INVALID_ARGUMENT, "filters.refuse_seconds: must be >= 0: got -1"),
      "Decline"
    )
    expect(error).toMatchObject({
      _tag: "InvalidArgument",
      call: "Decline",
      field: "filters.refuse_seconds",
      rule: "must be >= 0: got -1"
    })
  })

  it("UNAVAILABLE with berth-leader is NotLeader, without it Unavailable", () => {
    expect(
      SchedulerError.fromGrpc(serviceError(status.UNAVAILABLE, "not leading", { "berth-leader": "10.0.0.2:5050" }), "Kill")
    ).toMatchObject({ _tag: "NotLeader", call: "Kill", leader: "10.0.0.2:5050" })
    expect(SchedulerError.fromGrpc(serviceError(status.UNAVAILABLE, "connection refused"), "Kill")).toMatchObject({
      _tag: "Unavailable",
      call: "Kill",
      message: "connection refused"
    })
  })

  it("PERMISSION_DENIED is PermissionDenied with berth-reason unauthorized, FrameworkRemoved otherwise", () => {
    const denied = SchedulerError.fromGrpc(
      serviceError(status.PERMISSION_DENIED, "frameworkInfo.roles[1]: principal \"a\" may not subscribe with role \"db\"", {
        "berth-reason": "unauthorized",
        "berth-field": "frameworkInfo.roles[1]",
        "berth-rule": "principal \"a\" may not subscribe with role \"db\""
      }),
      "Subscribe",
      "fw-1"
    )
    expect(denied).toMatchObject({
      _tag: "PermissionDenied",
      call: "Subscribe",
      field: "frameworkInfo.roles[1]",
      rule: "principal \"a\" may not subscribe with role \"db\""
    })
    expect(
      SchedulerError.fromGrpc(serviceError(status.PERMISSION_DENIED, "gone", { "berth-reason": "framework-removed" }), "Subscribe", "fw-1")
    ).toMatchObject({ _tag: "FrameworkRemoved", frameworkId: "fw-1", message: "gone" })
  })

  it("UNAUTHENTICATED is Unauthenticated; a rate-limited RESOURCE_EXHAUSTED is RateLimited with the hint", () => {
    expect(SchedulerError.fromGrpc(serviceError(status.UNAUTHENTICATED, "invalid credentials"), "Accept")).toMatchObject({
      _tag: "Unauthenticated",
      call: "Accept",
      message: "invalid credentials"
    })
    expect(
      SchedulerError.fromGrpc(
        serviceError(status.RESOURCE_EXHAUSTED, "slow down", { "berth-reason": "rate-limited", "berth-retry-after-ms": "750" }),
        "Revive"
      )
    ).toMatchObject({ _tag: "RateLimited", call: "Revive", retryAfterMs: 750 })
    expect(SchedulerError.fromGrpc(serviceError(status.RESOURCE_EXHAUSTED, "too big"), "Accept")).toMatchObject({
      _tag: "CallFailed",
      code: "RESOURCE_EXHAUSTED"
    })
  })

  it("maps the remaining statuses", () => {
    const map = (code: status) => SchedulerError.fromGrpc(serviceError(code, "why"), "Revive", "fw-9")
    expect(map(status.DEADLINE_EXCEEDED)).toMatchObject({ _tag: "Unavailable", call: "Revive" })
    expect(map(status.FAILED_PRECONDITION)).toMatchObject({ _tag: "SessionLost", call: "Revive", message: "why" })
    expect(map(status.NOT_FOUND)).toMatchObject({ _tag: "SessionLost", call: "Revive" })
    expect(map(status.PERMISSION_DENIED)).toMatchObject({ _tag: "FrameworkRemoved", frameworkId: "fw-9", message: "why" })
    expect(map(status.INTERNAL)).toMatchObject({ _tag: "CallFailed", call: "Revive", code: "INTERNAL", message: "why" })
    expect(SchedulerError.fromGrpc(new TypeError("cannot serialise"), "Accept")).toMatchObject({
      _tag: "CallFailed",
      code: "UNKNOWN",
      message: "cannot serialise"
    })
  })
})
