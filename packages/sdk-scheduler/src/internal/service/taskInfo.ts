/**
 * The TaskInfo of one task of a pod instance, from the spec: command with rendered config
 * templates, environment, artifacts, health and readiness checks, kill policy and labels. The
 * task id and resources are filled in by the task lifecycle and placement.
 */
import { v1 } from "@berth/proto"
import * as ServiceSpec from "../../ServiceSpec.ts"

const quote = (text: string) => `'${text.replace(/'/g, `'"'"'`)}'`

// The executor reads a 0 as "use Mesos' default" (a 15 s delay, say), so a spec's 0 is sent as 1 ms.
const seconds = (value: number | undefined, fallback: number) => (value === undefined ? fallback : value === 0 ? 0.001 : value)

const check = (c: ServiceSpec.Check): v1.HealthCheck => ({
  type: v1.HealthCheck_Type.COMMAND,
  delaySeconds: seconds(c.delaySeconds, 0.001),
  intervalSeconds: c.intervalSeconds ?? 1,
  timeoutSeconds: c.timeoutSeconds ?? 10,
  consecutiveFailures: c.consecutiveFailures ?? 3,
  gracePeriodSeconds: seconds(c.gracePeriodSeconds, 0.001),
  command: { shell: true, value: c.cmd, arguments: [], environment: [], uris: [], user: "" }
})

/** The environment every task of an instance gets, before the pod's and the task's own. */
export const baseEnv = (spec: ServiceSpec.ServiceSpec, pod: string, index: number, task: string): Record<string, string> => ({
  SERVICE_NAME: spec.name,
  POD_NAME: pod,
  POD_INSTANCE: ServiceSpec.instanceName(pod, index),
  POD_INSTANCE_INDEX: String(index),
  TASK_NAME: task
})

export const make = (
  spec: ServiceSpec.ServiceSpec,
  pod: string,
  index: number,
  task: string,
  options: { readonly fingerprint: string; readonly extraEnv?: Readonly<Record<string, string>> | undefined }
): Partial<v1.TaskInfo> => {
  const p = spec.pods[pod]!
  const t = p.tasks[task]!
  const env = { ...baseEnv(spec, pod, index, task), ...p.env, ...t.env, ...options.extraEnv }
  // Config templates are rendered here and written by the task's own shell before its command,
  // so the task needs no helper binary in its sandbox.
  const prelude = (t.configs ?? []).map((c) => {
    const dir = c.dest.includes("/") ? `mkdir -p ${quote(c.dest.slice(0, c.dest.lastIndexOf("/")))} && ` : ""
    return `${dir}printf '%s' ${quote(ServiceSpec.render(c.template, env))} > ${quote(c.dest)}`
  })
  const uris = [...(p.uris ?? []), ...(t.uris ?? [])]
  return {
    name: `${ServiceSpec.instanceName(pod, index)}-${task}`,
    command: {
      shell: true,
      value: prelude.length === 0 ? t.cmd : `${prelude.join(" && ")} && ${t.cmd}`,
      arguments: [],
      environment: Object.entries(env).map(([name, value]) => ({ name, value })),
      uris: uris.map((value) => ({ value, executable: false, extract: /\.(tar\.gz|tgz|zip)$/.test(value), cache: false, outputFile: "", checksum: "" })),
      user: spec.user ?? ""
    },
    ...(t.health === undefined ? {} : { healthCheck: check(t.health) }),
    ...(t.readiness === undefined ? {} : { check: check(t.readiness) }),
    ...(t.killGracePeriodSeconds === undefined ? {} : { killPolicy: { gracePeriodSeconds: t.killGracePeriodSeconds } }),
    labels: {
      labels: [
        { key: "berth.service", value: spec.name },
        { key: "berth.instance", value: ServiceSpec.instanceName(pod, index) },
        { key: "berth.task", value: task },
        { key: "berth.config", value: options.fingerprint }
      ]
    }
  }
}

/**
 * The task group of a pod instance's RUNNING tasks, run by the default executor in one shared
 * sandbox (so every task sees the pod's volumes). Each task declares its own share of the pod's
 * reservation (placement carves it out; see `Placement.Request`); a resource set shared by
 * several tasks is declared by the first of them only. The executor id is left to the lifecycle
 * (one executor per attempt).
 */
export const group = (
  spec: ServiceSpec.ServiceSpec,
  pod: string,
  index: number,
  taskNames: ReadonlyArray<string>,
  options: { readonly fingerprint: string }
): { readonly executor: v1.ExecutorInfo; readonly tasks: ReadonlyArray<v1.TaskInfo> } => {
  const p = spec.pods[pod]!
  const sets = new Set<string>()
  const tasks = taskNames.map((name) => {
    const t = p.tasks[name]!
    let declared: Array<v1.Resource> = []
    if (t.resourceSet === undefined || !sets.has(t.resourceSet)) {
      if (t.resourceSet !== undefined) sets.add(t.resourceSet)
      const r = ServiceSpec.taskResources(p, t)
      declared = [["cpus", r.cpus], ["mem", r.mem], ["disk", r.disk ?? 0], ["gpus", r.gpus ?? 0]]
        .filter(([, amount]) => (amount as number) > 0)
        .map(([resource, amount]) => v1.Resource.create({ name: resource as string, value: { $case: "scalar", value: amount as number } }))
    }
    // The task id is the task's name: the lifecycle makes it `<instance>.<attempt>.<name>`.
    return v1.TaskInfo.create({ ...make(spec, pod, index, name, options), taskId: name, resources: declared })
  })
  return {
    executor: v1.ExecutorInfo.create({ type: v1.ExecutorInfo_Type.DEFAULT, executorId: "", name: ServiceSpec.instanceName(pod, index) }),
    tasks
  }
}
