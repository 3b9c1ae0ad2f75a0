// kv-store: a stateful service in a few lines. Three pods, one per host, each with a persistent
// volume its server writes to; a readiness check gates rolling updates; a backup plan copies
// each pod's data while it runs. Everything else
// (reservations, volumes, restarts in place, replacement, rolling updates, uninstall) is the
// SDK's service runtime, operated through the SDK's HTTP API (/v1/plans, /v1/pods, /metrics...).
import { OperatorHttp, ServiceScheduler, ServiceSpec } from "@berth/sdk-scheduler"
import { StateStore } from "@berth/storage"
import { Layer } from "effect"

/** The service, as YAML. `{{...}}` in `configs` templates are filled from the task's env. */
export const specYaml = `
name: kv-store
role: kv
pods:
  kv:
    count: 3
    placement: [["hostname", "UNIQUE"]]
    volumes: [{ path: data, size: 16 }]
    tasks:
      server:
        goal: RUNNING
        cpus: 0.1
        mem: 32
        env: { VERSION: "1" }
        configs:
          - dest: kv.conf
            template: "instance={{POD_INSTANCE}} version={{VERSION}}"
        # The "server": record every start in the volume, then serve (sleep) until killed.
        cmd: >-
          echo "$(cat kv.conf) started" >> data/log &&
          echo "$$" > data/pid &&
          sleep 0.5 && touch ready && exec sleep 100000
        readiness: { cmd: "test -f ready", intervalSeconds: 0.2 }
      # Run by the backup plan inside the running pod: it reads the live volume.
      backup:
        goal: FINISH
        cpus: 0.1
        mem: 32
        cmd: test -n "$BACKUP_DIR" && mkdir -p "$BACKUP_DIR" && cp data/log "$BACKUP_DIR/$POD_INSTANCE.log"
plans:
  backup:
    parameters: { BACKUP_DIR: "" }
    phases:
      backup: { pod: kv, strategy: serial, tasks: [backup] }
`

export interface Options {
  readonly master: string
  /** The SQLite file holding the scheduler's state (framework id, plans, tasks). */
  readonly state: string
  readonly count?: number | undefined
  readonly version?: string | undefined
  /** Replace a pod that keeps failing for this long (default: always restart in place). */
  readonly replaceAfterMs?: number | undefined
  /** The operator API's port (default 0: any free port). */
  readonly httpPort?: number | undefined
  /** Run as one of several replicas sharing `state`; the leader's lease lives this long. */
  readonly leaseTtlSeconds?: number | undefined
}

/** The spec with an instance count and a version (a new version is a config change: a rolling update). */
export const spec = (options: { readonly count?: number | undefined; readonly version?: string | undefined } = {}) =>
  ServiceSpec.fromYamlSync(
    specYaml.replace("count: 3", `count: ${options.count ?? 3}`).replace('VERSION: "1"', `VERSION: "${options.version ?? "1"}"`)
  )

/** The whole scheduler (session, offers, task lifecycle, service runtime) on SQLite, with its operator API. */
export const layer = (
  options: Options
): Layer.Layer<ServiceScheduler.ServiceScheduler | OperatorHttp.OperatorHttp, ServiceScheduler.HaError | OperatorHttp.OperatorHttpError> => {
  const stack = { spec: spec(options), master: options.master, failurePolicy: { permanentAfterMs: options.replaceAfterMs } }
  return OperatorHttp.layer({ port: options.httpPort }).pipe(
    Layer.provideMerge(options.leaseTtlSeconds === undefined
      ? ServiceScheduler.layerStack(stack)
      : ServiceScheduler.layerHa({ ...stack, leaseTtl: `${options.leaseTtlSeconds} seconds` })),
    Layer.provide(StateStore.layerSqlite({ path: options.state }))
  )
}
