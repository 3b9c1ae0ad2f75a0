// Runs hello-world: `node dist/main.js --master 127.0.0.1:5050`; prints the plans as they change.
import { NodeRuntime } from "@effect/platform-node"
import { ServiceScheduler } from "@berth/sdk-scheduler"
import { Effect, Schedule } from "effect"
import { parseArgs } from "node:util"
import * as HelloWorld from "./helloWorld.ts"

const { values } = parseArgs({ options: { master: { type: "string", default: "127.0.0.1:5050" }, state: { type: "string" } } })

let last = ""
Effect.gen(function*() {
  const service = yield* ServiceScheduler.ServiceScheduler
  yield* Effect.gen(function*() {
    const line = (yield* service.plans).map((p) => `${p.name}:${p.status}`).join(" ")
    if (line !== last) console.log((last = line))
  }).pipe(Effect.repeat(Schedule.spaced("500 millis")))
}).pipe(Effect.provide(HelloWorld.layer({ master: values.master, state: values.state })), NodeRuntime.runMain)
