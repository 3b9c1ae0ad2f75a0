// Small building blocks shared by the pages: status badges, instance bars, and the scale,
// restart and destroy dialogs.
import { Badge, Button, Group, Modal, NumberInput, Progress, Stack, Text, TextInput, Tooltip } from "@mantine/core"
import { useEffect, useState } from "react"
import { api, type App } from "./api.ts"
import { useDeployableAction } from "./notify.tsx"
import { statusColor, statusHelp, type AppStatus } from "./status.ts"

export const StatusBadge = ({ status }: { status: AppStatus }) => (
  <Tooltip label={statusHelp[status]} withArrow>
    <Badge color={statusColor[status]} variant="light" size="md" radius="sm" data-testid="app-status">
      {status}
    </Badge>
  </Tooltip>
)

/** `running / instances` with a bar: green healthy, red unhealthy, blue running, grey staged. */
export const InstancesBar = ({ app, width = 150 }: { app: App; width?: number }) => {
  const wanted = app.instances ?? 0
  const running = app.tasksRunning ?? 0
  const healthy = app.tasksHealthy ?? 0
  const unhealthy = app.tasksUnhealthy ?? 0
  const staged = app.tasksStaged ?? 0
  const total = Math.max(wanted, running + staged, 1)
  const pct = (n: number) => (n / total) * 100
  const plainRunning = Math.max(0, running - healthy - unhealthy)
  return (
    <Stack gap={4} style={{ width }}>
      <Text size="sm" fw={500} data-testid="app-instances">
        {running} / {wanted}
        {staged > 0 && (
          <Text span size="xs" c="dimmed">
            {" "}
            ({staged} staged)
          </Text>
        )}
      </Text>
      <Progress.Root size="sm">
        <Progress.Section value={pct(healthy)} color="teal" />
        <Progress.Section value={pct(plainRunning)} color="blue" />
        <Progress.Section value={pct(unhealthy)} color="red" />
        <Progress.Section value={pct(staged)} color="gray.5" />
      </Progress.Root>
    </Stack>
  )
}

export const ScaleModal = ({ app, onClose, onDone }: { app: App | undefined; onClose: () => void; onDone: () => void }) => {
  const [value, setValue] = useState<number | string>(1)
  const [busy, setBusy] = useState(false)
  const run = useDeployableAction()
  useEffect(() => {
    if (app !== undefined) setValue(app.instances ?? 0)
  }, [app])
  const invalid = typeof value !== "number" || value < 0 || !Number.isInteger(value)
  const submit = async () => {
    if (app === undefined || typeof value !== "number") return
    setBusy(true)
    const ok = await run(`Scaled ${app.id} to ${value}`, (force) => api.scaleApp(app.id, value, force), onDone)
    setBusy(false)
    if (ok !== "failed") onClose()
  }
  return (
    <Modal opened={app !== undefined} onClose={onClose} title={<Text fw={600}>Scale {app?.id}</Text>}>
      <Stack>
        <NumberInput
          label="Instances"
          description="How many instances should run"
          min={0}
          allowDecimal={false}
          value={value}
          onChange={setValue}
          error={invalid ? "A whole number of 0 or more" : undefined}
          data-autofocus
          data-testid="scale-input"
          onKeyDown={(e) => {
            if (e.key === "Enter" && !invalid) void submit()
          }}
        />
        <Group justify="flex-end">
          <Button variant="default" onClick={onClose}>
            Cancel
          </Button>
          <Button onClick={() => void submit()} disabled={invalid} loading={busy} data-testid="scale-submit">
            Scale application
          </Button>
        </Group>
      </Stack>
    </Modal>
  )
}

export const RestartModal = ({ app, onClose, onDone }: { app: App | undefined; onClose: () => void; onDone: () => void }) => {
  const [busy, setBusy] = useState(false)
  const run = useDeployableAction()
  const submit = async () => {
    if (app === undefined) return
    setBusy(true)
    const ok = await run(`Restarting ${app.id}`, (force) => api.restartApp(app.id, force), onDone)
    setBusy(false)
    if (ok !== "failed") onClose()
  }
  return (
    <Modal opened={app !== undefined} onClose={onClose} title={<Text fw={600}>Restart {app?.id}</Text>}>
      <Stack>
        <Text size="sm">
          Every instance is replaced by a rolling restart that respects the app's upgrade strategy (minimum health capacity and
          maximum over-capacity).
        </Text>
        <Group justify="flex-end">
          <Button variant="default" onClick={onClose}>
            Cancel
          </Button>
          <Button color="orange" onClick={() => void submit()} loading={busy} data-testid="restart-submit">
            Restart
          </Button>
        </Group>
      </Stack>
    </Modal>
  )
}

export const DestroyModal = ({ app, onClose, onDone }: { app: App | undefined; onClose: () => void; onDone: () => void }) => {
  const [typed, setTyped] = useState("")
  const [busy, setBusy] = useState(false)
  const run = useDeployableAction()
  useEffect(() => setTyped(""), [app])
  const submit = async () => {
    if (app === undefined) return
    setBusy(true)
    const ok = await run(`Destroying ${app.id}`, (force) => api.destroyApp(app.id, force), onDone)
    setBusy(false)
    if (ok !== "failed") onClose()
  }
  return (
    <Modal opened={app !== undefined} onClose={onClose} title={<Text fw={600}>Destroy {app?.id}</Text>}>
      <Stack>
        <Text size="sm">
          This kills all {app?.tasksRunning ?? 0} running instances and deletes the application and its history. Type the app id to
          confirm.
        </Text>
        <TextInput
          placeholder={app?.id}
          value={typed}
          onChange={(e) => setTyped(e.currentTarget.value)}
          data-autofocus
          data-testid="destroy-confirm"
        />
        <Group justify="flex-end">
          <Button variant="default" onClick={onClose}>
            Cancel
          </Button>
          <Button
            color="red"
            onClick={() => void submit()}
            loading={busy}
            disabled={typed !== app?.id && `/${typed}` !== app?.id}
            data-testid="destroy-submit"
          >
            Destroy
          </Button>
        </Group>
      </Stack>
    </Modal>
  )
}

/** The three dialogs an app row or page can open, with their state in one place. */
export const useAppDialogs = (onDone: () => void, onDestroyed?: () => void) => {
  const [scaling, setScaling] = useState<App | undefined>(undefined)
  const [restarting, setRestarting] = useState<App | undefined>(undefined)
  const [destroying, setDestroying] = useState<App | undefined>(undefined)
  const dialogs = (
    <>
      <ScaleModal app={scaling} onClose={() => setScaling(undefined)} onDone={onDone} />
      <RestartModal app={restarting} onClose={() => setRestarting(undefined)} onDone={onDone} />
      <DestroyModal
        app={destroying}
        onClose={() => setDestroying(undefined)}
        onDone={() => {
          onDone()
          onDestroyed?.()
        }}
      />
    </>
  )
  return { scale: setScaling, restart: setRestarting, destroy: setDestroying, dialogs }
}

export const Resources = ({ app }: { app: App }) => (
  <Group gap={6} wrap="nowrap">
    <Text size="sm">{app.cpus ?? 1}</Text>
    <Text size="xs" c="dimmed">
      CPU
    </Text>
    <Text size="sm" ml={4}>
      {formatMem(app.mem ?? 128)}
    </Text>
  </Group>
)

export const formatMem = (mib: number): string => (mib >= 1024 ? `${(mib / 1024).toFixed(mib % 1024 === 0 ? 0 : 1)} GiB` : `${mib} MiB`)
