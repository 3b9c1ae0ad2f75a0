// hello-world: stateless pods and a plan. `hello` runs two servers; `world` runs a job on each
// of its two instances once per deployment; the `greet` plan, started by the operator with a
// NAME parameter, runs the job again with NAME in its environment.
import { ServiceScheduler, ServiceSpec } from "@berth/sdk-scheduler"
import { StateStore } from "@berth/storage"
import { Layer } from "effect"

export const spec = ServiceSpec.fromYamlSync(`
name: hello-world
pods:
  hello:
    count: 2
    tasks:
      server:
        goal: RUNNING
        cpus: 0.1
        mem: 32
        cmd: echo "hello from $POD_INSTANCE" && exec sleep 100000
        readiness: { cmd: "true", intervalSeconds: 0.2 }
  world:
    count: 2
    tasks:
      job:
        goal: FINISH
        cpus: 0.1
        mem: 32
        cmd: echo "world $POD_INSTANCE_INDEX greets \${NAME:-nobody}"
plans:
  greet:
    strategy: serial
    parameters: { NAME: "nobody" }
    phases:
      greet: { pod: world, strategy: parallel, tasks: [job] }
`)

/** The scheduler, with its state in memory (a restart starts over) or in a SQLite file. */
export const layer = (options: { readonly master: string; readonly state?: string | undefined }): Layer.Layer<ServiceScheduler.ServiceScheduler, ServiceScheduler.StackError> =>
  ServiceScheduler.layerStack({ spec, master: options.master }).pipe(
    Layer.provide(options.state === undefined ? StateStore.layerMemory : StateStore.layerSqlite({ path: options.state }))
  )
