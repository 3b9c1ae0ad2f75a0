// Deployments in flight with live progress (steps and, per affected app, instances running of
// instances wanted), plus rollback (DELETE) and force-stop (DELETE ?force=true).
import { Alert, Anchor, Badge, Button, Card, Group, Modal, Progress, Stack, Table, Text, ThemeIcon, Title, Tooltip } from "@mantine/core"
import { IconArrowBackUp, IconCheck, IconInfoCircle, IconPlayerStop, IconRocket } from "@tabler/icons-react"
import { useState } from "react"
import { api, type App, type Deployment } from "../api.ts"
import { useNotify, errorMessage } from "../notify.tsx"
import { appHref } from "../router.ts"
import { ago } from "../status.ts"
import { useStore } from "../store.tsx"

const actionColor: Record<string, string> = {
  StartApplication: "teal",
  StopApplication: "red",
  ScaleApplication: "blue",
  RestartApplication: "orange",
  KillAllOldTasksOf: "grape",
  ResolveArtifacts: "gray"
}

/** Step progress plus, for each app acted on now, how far its instances are. */
export const DeploymentProgress = ({ deployment, apps }: { deployment: Deployment; apps: App[] }) => {
  const total = Math.max(deployment.totalSteps ?? deployment.steps?.length ?? 1, 1)
  const current = Math.min(deployment.currentStep ?? 1, total)
  // Steps before the current one are done; the current one counts by its apps' progress.
  const actions = deployment.currentActions ?? []
  const fractions = actions.map((a) => {
    const app = apps.find((x) => x.id === a.app)
    if (app === undefined) return a.action === "StopApplication" ? 1 : 0
    const wanted = app.instances ?? 0
    if (a.action === "StopApplication") return 0
    if (wanted === 0) return (app.tasksRunning ?? 0) === 0 ? 1 : 0
    // With health checks an instance only counts once healthy, as the deployment waits for that.
    const done = (app.healthChecks ?? []).length > 0 ? (app.tasksHealthy ?? 0) : (app.tasksRunning ?? 0)
    return Math.min(1, done / wanted)
  })
  const stepFraction = fractions.length === 0 ? 0 : fractions.reduce((a, b) => a + b, 0) / fractions.length
  const percent = Math.round(((current - 1 + stepFraction) / total) * 100)
  return (
    <Stack gap={6} data-testid="deployment-progress">
      <Group justify="space-between">
        <Group gap={6}>
          {actions.map((a, i) => (
            <Badge key={i} color={actionColor[a.action] ?? "gray"} variant="light" radius="sm" tt="none">
              {a.action} {a.app ?? a.pod ?? ""}
            </Badge>
          ))}
        </Group>
        <Text size="xs" c="dimmed">
          step {current} of {total} · {percent}%
        </Text>
      </Group>
      <Progress value={Math.max(percent, 3)} striped animated size="md" radius="xl" />
      {actions.map((a, i) => {
        const app = apps.find((x) => x.id === a.app)
        if (app === undefined || a.action === "StopApplication") return null
        return (
          <Text key={i} size="xs" c="dimmed">
            {a.app}: {app.tasksRunning ?? 0} of {app.instances ?? 0} running
            {(app.tasksHealthy ?? 0) > 0 ? `, ${app.tasksHealthy} healthy` : ""}
            {(a.readinessCheckResults ?? []).length > 0 ? `, ${(a.readinessCheckResults ?? []).length} readiness results` : ""}
          </Text>
        )
      })}
    </Stack>
  )
}

export const DeploymentsPage = () => {
  const store = useStore()
  const { show } = useNotify()
  const [confirm, setConfirm] = useState<{ deployment: Deployment; force: boolean } | undefined>(undefined)
  const [busy, setBusy] = useState(false)

  const cancel = async () => {
    if (confirm === undefined) return
    setBusy(true)
    try {
      const result = await api.cancelDeployment(confirm.deployment.id, confirm.force)
      show({
        title: confirm.force ? "Deployment stopped" : "Rolling back",
        message: confirm.force
          ? `${confirm.deployment.id} was cancelled without rollback`
          : `Rollback deployment ${result?.deploymentId ?? ""} started`,
        color: "teal"
      })
      setConfirm(undefined)
      store.refresh()
    } catch (e) {
      show({ title: "Could not cancel the deployment", message: errorMessage(e), color: "red" })
    } finally {
      setBusy(false)
    }
  }

  return (
    <Stack gap="lg">
      <div>
        <Title order={2}>Deployments</Title>
        <Text c="dimmed" size="sm">
          Every change to an app runs as a deployment: an ordered plan of steps. Progress updates live.
        </Text>
      </div>
      <Card withBorder radius="md" padding={0}>
        {store.deployments.length === 0 ? (
          <Stack align="center" gap="xs" py={48} data-testid="no-deployments">
            <ThemeIcon size={48} radius="xl" variant="light" color="teal">
              <IconCheck size={26} />
            </ThemeIcon>
            <Text fw={600}>No deployments in progress</Text>
            <Text size="sm" c="dimmed">
              All applications are at their desired state.
            </Text>
          </Stack>
        ) : (
          <Table verticalSpacing="md" horizontalSpacing="md" data-testid="deployments-table">
            <Table.Thead bg="gray.0">
              <Table.Tr>
                <Table.Th>Deployment</Table.Th>
                <Table.Th style={{ whiteSpace: "nowrap" }}>Affected apps</Table.Th>
                <Table.Th w="40%">Progress</Table.Th>
                <Table.Th>Started</Table.Th>
                <Table.Th />
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {store.deployments.map((d) => (
                <Table.Tr key={d.id}>
                  <Table.Td>
                    <Group gap="xs" wrap="nowrap">
                      <ThemeIcon variant="light" radius="xl" size="sm">
                        <IconRocket size={14} />
                      </ThemeIcon>
                      <Text className="ml-mono" lineClamp={1} maw={220} title={d.id}>
                        {d.id}
                      </Text>
                    </Group>
                  </Table.Td>
                  <Table.Td>
                    <Stack gap={2}>
                      {(d.affectedApps ?? []).map((a) => (
                        <Anchor key={a} href={appHref(a)} size="sm">
                          {a}
                        </Anchor>
                      ))}
                    </Stack>
                  </Table.Td>
                  <Table.Td>
                    <DeploymentProgress deployment={d} apps={store.apps} />
                  </Table.Td>
                  <Table.Td>
                    <Text size="sm" style={{ whiteSpace: "nowrap" }}>
                      {ago(d.version, store.now)}
                    </Text>
                  </Table.Td>
                  <Table.Td>
                    <Group gap="xs" wrap="nowrap" justify="flex-end">
                      <Tooltip label="Cancel and deploy the previous version">
                        <Button size="xs" variant="light" leftSection={<IconArrowBackUp size={14} />} onClick={() => setConfirm({ deployment: d, force: false })}>
                          Rollback
                        </Button>
                      </Tooltip>
                      <Tooltip label="Cancel without rollback">
                        <Button size="xs" variant="subtle" color="red" leftSection={<IconPlayerStop size={14} />} onClick={() => setConfirm({ deployment: d, force: true })}>
                          Stop
                        </Button>
                      </Tooltip>
                    </Group>
                  </Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        )}
      </Card>
      <Modal
        opened={confirm !== undefined}
        onClose={() => setConfirm(undefined)}
        title={<Text fw={600}>{confirm?.force === true ? "Stop deployment" : "Roll back deployment"}</Text>}
      >
        <Stack>
          {confirm?.force === true ? (
            <Alert color="red" icon={<IconInfoCircle size={18} />}>
              Stopping cancels the deployment where it is, without rollback. Apps can be left with a mix of old and new instances.
            </Alert>
          ) : (
            <Text size="sm">The deployment is cancelled and a new deployment reverts its changes.</Text>
          )}
          <Group justify="flex-end">
            <Button variant="default" onClick={() => setConfirm(undefined)}>
              Cancel
            </Button>
            <Button color={confirm?.force === true ? "red" : "blue"} loading={busy} onClick={() => void cancel()}>
              {confirm?.force === true ? "Stop deployment" : "Roll back"}
            </Button>
          </Group>
        </Stack>
      </Modal>
    </Stack>
  )
}
