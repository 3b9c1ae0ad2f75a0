import { v1 } from "@berth/proto"
import * as Prometheus from "prom-client"

/**
 * The master's Prometheus metrics, in a registry of its own (several masters can live in one
 * process, as in tests). Gauges that describe state are computed at scrape time from the master's
 * maps, so the hot paths only bump counters.
 */
export const make = (observe: {
  readonly tasksByState: () => ReadonlyMap<v1.TaskState, number>
  readonly agentsByState: () => ReadonlyMap<string, number>
  readonly frameworks: () => { readonly connected: number; readonly disconnected: number }
  readonly offersOutstanding: () => number
}) => {
  const registry = new Prometheus.Registry()
  const counter = (name: string, help: string) => new Prometheus.Counter({ name, help, registers: [registry] })
  const offersSent = counter("berth_master_offers_sent_total", "Offers sent to frameworks")
  const offersAccepted = counter("berth_master_offers_accepted_total", "Offers used by an Accept")
  const offersDeclined = counter("berth_master_offers_declined_total", "Offers declined by frameworks")
  const offersRescinded = counter("berth_master_offers_rescinded_total", "Offers taken back (agent gone, expiry, suppress, failover)")
  const tasksLaunched = counter("berth_master_tasks_launched_total", "Tasks launched")
  const statusUpdates = counter("berth_master_status_updates_total", "Task status updates received from agents")
  const cycleSeconds = new Prometheus.Histogram({
    name: "berth_master_allocation_cycle_seconds",
    help: "Time one allocation cycle takes",
    buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry]
  })
  new Prometheus.Gauge({
    name: "berth_master_tasks",
    help: "Tasks the master knows, by state",
    labelNames: ["state"] as const,
    registers: [registry],
    collect() {
      this.reset()
      for (const [state, count] of observe.tasksByState()) {
        const name = Object.entries(v1.TaskState).find(([, value]) => value === state)?.[0] ?? String(state)
        this.set({ state: name }, count)
      }
    }
  })
  new Prometheus.Gauge({
    name: "berth_master_agents",
    help: "Agents, by state",
    labelNames: ["state"] as const,
    registers: [registry],
    collect() {
      this.reset()
      for (const [state, count] of observe.agentsByState()) this.set({ state }, count)
    }
  })
  new Prometheus.Gauge({
    name: "berth_master_frameworks",
    help: "Frameworks, by whether their scheduler is connected",
    labelNames: ["connected"] as const,
    registers: [registry],
    collect() {
      const { connected, disconnected } = observe.frameworks()
      this.set({ connected: "true" }, connected)
      this.set({ connected: "false" }, disconnected)
    }
  })
  new Prometheus.Gauge({
    name: "berth_master_offers_outstanding",
    help: "Offers sent and not yet used, declined or rescinded",
    registers: [registry],
    collect() {
      this.set(observe.offersOutstanding())
    }
  })
  return {
    offersSent,
    offersAccepted,
    offersDeclined,
    offersRescinded,
    tasksLaunched,
    statusUpdates,
    cycleSeconds,
    text: () => registry.metrics(),
    contentType: registry.contentType
  }
}

export type Metrics = ReturnType<typeof make>
