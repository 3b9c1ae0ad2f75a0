// Toast notifications (Mantine's Notification component in a fixed stack) and the shared
// "run a deployable write" helper that turns a 409 into an offer to force.
import { Button, Group, Notification, Stack, Text } from "@mantine/core"
import { IconAlertTriangle, IconCheck, IconX } from "@tabler/icons-react"
import { createContext, useCallback, useContext, useMemo, useRef, useState, type ReactNode } from "react"
import { ApiError, type DeploymentResult } from "./api.ts"

export interface Toast {
  readonly id: number
  readonly title: string
  readonly message: ReactNode
  readonly color: "teal" | "red" | "yellow" | "blue"
  readonly action?: { label: string; run: () => void }
  readonly sticky?: boolean
}

interface Notifier {
  show: (toast: Omit<Toast, "id">) => void
  dismiss: (id: number) => void
}

const NotifyContext = createContext<Notifier | undefined>(undefined)

export const NotificationsProvider = ({ children }: { children: ReactNode }) => {
  const [toasts, setToasts] = useState<Toast[]>([])
  const nextId = useRef(1)
  const dismiss = useCallback((id: number) => setToasts((ts) => ts.filter((t) => t.id !== id)), [])
  const show = useCallback(
    (toast: Omit<Toast, "id">) => {
      const id = nextId.current++
      setToasts((ts) => [...ts.slice(-4), { ...toast, id }])
      if (toast.sticky !== true) window.setTimeout(() => dismiss(id), toast.color === "red" ? 10_000 : 5_000)
    },
    [dismiss]
  )
  const value = useMemo(() => ({ show, dismiss }), [show, dismiss])
  return (
    <NotifyContext.Provider value={value}>
      {children}
      <Stack gap="xs" style={{ position: "fixed", bottom: 16, right: 16, width: 380, zIndex: 1000 }} aria-live="polite">
        {toasts.map((t) => (
          <Notification
            key={t.id}
            title={t.title}
            color={t.color}
            withBorder
            icon={t.color === "teal" ? <IconCheck size={18} /> : t.color === "yellow" ? <IconAlertTriangle size={18} /> : t.color === "red" ? <IconX size={18} /> : undefined}
            onClose={() => dismiss(t.id)}
            data-testid="notification"
          >
            <Text size="sm">{t.message}</Text>
            {t.action !== undefined && (
              <Group justify="flex-end" mt="xs">
                <Button
                  size="xs"
                  color="orange"
                  onClick={() => {
                    dismiss(t.id)
                    t.action?.run()
                  }}
                >
                  {t.action.label}
                </Button>
              </Group>
            )}
          </Notification>
        ))}
      </Stack>
    </NotifyContext.Provider>
  )
}

export const useNotify = (): Notifier => {
  const n = useContext(NotifyContext)
  if (n === undefined) throw new Error("useNotify outside NotificationsProvider")
  return n
}

export type ActionOutcome = "accepted" | "conflict" | "failed"

export const errorMessage = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/**
 * Runs a deployable write. On 409 (the app is locked by a deployment) it shows a notification
 * offering to retry with `?force=true`, which cancels the conflicting deployment. Resolves
 * "accepted", "conflict" (the notification now owns the retry, so dialogs can close) or "failed".
 */
export const useDeployableAction = () => {
  const { show } = useNotify()
  return useCallback(
    (what: string, write: (force: boolean) => Promise<DeploymentResult | undefined>, onDone?: () => void): Promise<ActionOutcome> => {
      const attempt = async (force: boolean): Promise<ActionOutcome> => {
        try {
          const result = await write(force)
          show({
            title: `${what}${force ? " (forced)" : ""}`,
            message: result?.deploymentId !== undefined ? `Deployment ${result.deploymentId} started` : "Accepted",
            color: "teal"
          })
          onDone?.()
          return "accepted"
        } catch (e) {
          if (e instanceof ApiError && e.status === 409 && !force) {
            show({
              title: "Locked by a deployment",
              message: `${e.message}. Forcing cancels the running deployment and may leave the app partly updated.`,
              color: "yellow",
              sticky: true,
              action: { label: "Force", run: () => void attempt(true) }
            })
            return "conflict"
          }
          show({ title: `${what} failed`, message: errorMessage(e), color: "red" })
          return "failed"
        }
      }
      return attempt(false)
    },
    [show]
  )
}
