// Every example app under examples/marathon-apps/ is a valid Marathon app definition.
import { describe, expect, it } from "@effect/vitest"
import { AppDefinition } from "@berth/marathon-like"
import { Result } from "effect"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"

const dir = fileURLToPath(new URL("../../../examples/marathon-apps/", import.meta.url))

describe("examples/marathon-apps", () => {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith(".json"))
  it("has examples", () => expect(files.length).toBeGreaterThanOrEqual(4))
  for (const file of files) {
    it(`${file} validates`, () => {
      const r = AppDefinition.validate(JSON.parse(fs.readFileSync(dir + file, "utf8")))
      expect(Result.isSuccess(r) ? "ok" : r.failure.message).toBe("ok")
    })
  }
})
