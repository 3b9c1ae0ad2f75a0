// The UI's single source of data: snapshots of apps, deployments and the launch queue, refetched
// whenever the `/v2/events` stream reports something. Marathon documents that its event order is
// not guaranteed and that clients should use events for cache invalidation and re-fetch
// snapshots; that is exactly what happens here (debounced, one request batch in flight).
import { createContext, useCallback, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from "react"
import { api, type App, type Deployment, type Info, type QueueItem } from "./api.ts"

export type LiveState = "connecting" | "live" | "offline"

export interface StoreState {
  readonly apps: App[]
  readonly deployments: Deployment[]
  readonly queue: QueueItem[]
  readonly info: Info | undefined
  readonly loaded: boolean
  readonly error: string | undefined
  readonly live: LiveState
  readonly lastEvent: { type: string; at: number } | undefined
  readonly now: number
}

interface Store extends StoreState {
  refresh: () => void
  queueFor: (appId: string) => QueueItem | undefined
}

// Marathon names every SSE message with its event type, so `onmessage` alone would miss them.
const eventTypes = [
  "api_post_event",
  "status_update_event",
  "instance_changed_event",
  "instance_health_changed_event",
  "unknown_instance_terminated_event",
  "failed_health_check_event",
  "health_status_changed_event",
  "add_health_check_event",
  "remove_health_check_event",
  "unhealthy_task_kill_event",
  "unhealthy_instance_kill_event",
  "deployment_info",
  "deployment_success",
  "deployment_failed",
  "deployment_step_success",
  "deployment_step_failure",
  "group_change_success",
  "group_change_failed",
  "app_terminated_event",
  "framework_message_event",
  "event_stream_attached",
  "event_stream_detached"
]

const StoreContext = createContext<Store | undefined>(undefined)

export const StoreProvider = ({ children }: { children: ReactNode }) => {
  const [state, setState] = useState<StoreState>({
    apps: [],
    deployments: [],
    queue: [],
    info: undefined,
    loaded: false,
    error: undefined,
    live: "connecting",
    lastEvent: undefined,
    now: Date.now()
  })
  const inFlight = useRef(false)
  const again = useRef(false)
  const timer = useRef<number | undefined>(undefined)

  const load = useCallback(async () => {
    if (inFlight.current) {
      again.current = true
      return
    }
    inFlight.current = true
    try {
      do {
        again.current = false
        try {
          const [apps, deployments, queue] = await Promise.all([api.listApps(), api.listDeployments(), api.queue()])
          setState((s) => ({ ...s, apps, deployments, queue, loaded: true, error: undefined, now: Date.now() }))
        } catch (e) {
          setState((s) => ({ ...s, loaded: true, error: e instanceof Error ? e.message : String(e), now: Date.now() }))
        }
      } while (again.current)
    } finally {
      inFlight.current = false
    }
  }, [])

  const refresh = useCallback(() => {
    if (timer.current !== undefined) return
    timer.current = window.setTimeout(() => {
      timer.current = undefined
      void load()
    }, 250)
  }, [load])

  useEffect(() => {
    void load()
    api.info().then(
      (info) => setState((s) => ({ ...s, info })),
      () => undefined
    )
  }, [load])

  useEffect(() => {
    const source = new EventSource("/v2/events")
    const onEvent = (type: string) => () => {
      setState((s) => ({ ...s, live: "live", lastEvent: { type, at: Date.now() } }))
      refresh()
    }
    const listeners = eventTypes.map((t) => [t, onEvent(t)] as const)
    for (const [t, f] of listeners) source.addEventListener(t, f)
    source.onmessage = onEvent("message")
    source.onopen = () => {
      setState((s) => ({ ...s, live: "live" }))
      // Anything may have happened while disconnected.
      refresh()
    }
    source.onerror = () => setState((s) => ({ ...s, live: source.readyState === EventSource.CLOSED ? "offline" : "connecting" }))
    return () => {
      for (const [t, f] of listeners) source.removeEventListener(t, f)
      source.close()
    }
  }, [refresh])

  // A slow poll as a backstop (and a faster one while the stream is down); also ticks "x ago".
  useEffect(() => {
    const period = state.live === "live" ? 10_000 : 3_000
    const id = window.setInterval(() => void load(), period)
    return () => window.clearInterval(id)
  }, [load, state.live])

  const queueFor = useCallback(
    (appId: string) => state.queue.find((q) => q.app?.id === appId),
    [state.queue]
  )

  const value = useMemo<Store>(() => ({ ...state, refresh, queueFor }), [state, refresh, queueFor])
  return <StoreContext.Provider value={value}>{children}</StoreContext.Provider>
}

export const useStore = (): Store => {
  const store = useContext(StoreContext)
  if (store === undefined) throw new Error("useStore outside StoreProvider")
  return store
}
