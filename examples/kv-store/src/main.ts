// Runs kv-store against a cluster: `node dist/main.js --master 127.0.0.1:5050 --state kv.db [--http 8080]`.
// It deploys (or resumes) the service, serves the operator API and prints every plan's status as it changes.
import { NodeRuntime } from "@effect/platform-node"
import { OperatorHttp, ServiceScheduler } from "@berth/sdk-scheduler"
import { Effect, Schedule } from "effect"
import { parseArgs } from "node:util"
import * as KvStore from "./kvStore.ts"

const { values } = parseArgs({
  options: {
    master: { type: "string", default: "127.0.0.1:5050" },
    state: { type: "string", default: "kv-store.db" },
    count: { type: "string", default: "3" },
    version: { type: "string", default: "1" },
    http: { type: "string", default: "0" },
    "lease-ttl": { type: "string" } // with several replicas on one state file: one leads
  }
})

let last = ""
const report = Effect.gen(function*() {
  const service = yield* ServiceScheduler.ServiceScheduler
  const line = (yield* service.plans).map((p) => `${p.name}:${p.status}`).join(" ")
  if (line !== last) console.log((last = line))
})

Effect.gen(function*() {
  console.log(`operator API on ${(yield* OperatorHttp.OperatorHttp).url}`)
  yield* report.pipe(Effect.repeat(Schedule.spaced("500 millis")))
}).pipe(
  Effect.provide(KvStore.layer({ master: values.master, state: values.state, count: Number(values.count), version: values.version, httpPort: Number(values.http), leaseTtlSeconds: values["lease-ttl"] === undefined ? undefined : Number(values["lease-ttl"]) })),
  NodeRuntime.runMain
)
