import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { ExecutorSession } from "@berth/sdk-executor"

const build = (env: Record<string, string>) => Effect.scoped(Layer.build(ExecutorSession.layerGrpc(env))).pipe(Effect.exit)

describe("ExecutorSession.layerGrpc", () => {
  it.effect("names the variable that is missing or wrong, and connects to nothing", () =>
    Effect.gen(function*() {
      const missing = yield* build({ BERTH_FRAMEWORK_ID: "f1", BERTH_EXECUTOR_ID: "e1" })
      expect(Exit.isFailure(missing)).toBe(true)
      expect(String(missing._tag === "Failure" ? missing.cause : "")).toContain("BERTH_AGENT_ENDPOINT: must be set")

      const wrong = yield* build({
        BERTH_FRAMEWORK_ID: "f1",
        BERTH_EXECUTOR_ID: "e1",
        BERTH_AGENT_ENDPOINT: "127.0.0.1:1",
        BERTH_RECOVERY_TIMEOUT_MS: "soon"
      })
      expect(String(wrong._tag === "Failure" ? wrong.cause : "")).toContain('BERTH_RECOVERY_TIMEOUT_MS: must be a number of milliseconds >= 0 (got "soon")')
    }))
})
