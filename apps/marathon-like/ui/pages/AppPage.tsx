// One application: header with status and actions, instances, why instances are not placed
// (from /v2/queue), its deployments, and the app definition.
import {
  ActionIcon,
  Alert,
  Anchor,
  Badge,
  Breadcrumbs,
  Button,
  Card,
  Code,
  CopyButton,
  Group,
  Menu,
  Progress,
  SimpleGrid,
  Stack,
  Table,
  Tabs,
  Text,
  ThemeIcon,
  Title,
  Tooltip
} from "@mantine/core"
import {
  IconAlertTriangle,
  IconArrowsMaximize,
  IconBraces,
  IconCheck,
  IconCopy,
  IconDots,
  IconEdit,
  IconListDetails,
  IconMapPin,
  IconRefresh,
  IconRocket,
  IconSkull,
  IconTrash,
  IconTrendingDown
} from "@tabler/icons-react"
import type { ReactNode } from "react"
import { api, type App, type QueueItem, type Task } from "../api.ts"
import { InstancesBar, StatusBadge, formatMem, useAppDialogs } from "../components.tsx"
import { DeploymentProgress } from "./DeploymentsPage.tsx"
import { appHref, navigate } from "../router.ts"
import { ago, appStatus, healthColor, taskHealth, taskStateColor, taskStateLabel } from "../status.ts"
import { errorMessage, useNotify } from "../notify.tsx"
import { useStore } from "../store.tsx"

const Field = ({ label, children }: { label: string; children: ReactNode }) => (
  <div>
    <Text size="xs" c="dimmed" tt="uppercase" fw={600}>
      {label}
    </Text>
    <Text size="sm" component="div">
      {children}
    </Text>
  </div>
)

const InstancesTable = ({ app, now, onChanged }: { app: App; now: number; onChanged: () => void }) => {
  const { show } = useNotify()
  const kill = async (task: Task, scale: boolean) => {
    try {
      await api.killTask(app.id, task.id, scale)
      show({ title: scale ? "Instance killed, app scaled down" : "Instance killed", message: scale ? task.id : `${task.id} will be replaced`, color: "teal" })
      onChanged()
    } catch (e) {
      show({ title: "Could not kill the instance", message: errorMessage(e), color: "red" })
    }
  }
  const tasks = [...(app.tasks ?? [])].sort((a, b) => (a.host ?? "").localeCompare(b.host ?? "") || a.id.localeCompare(b.id))
  if (tasks.length === 0)
    return (
      <Text c="dimmed" size="sm" p="md">
        No instances are running.
      </Text>
    )
  return (
    <Table verticalSpacing="xs" horizontalSpacing="md" highlightOnHover data-testid="instances-table">
      <Table.Thead bg="gray.0">
        <Table.Tr>
          <Table.Th>Instance</Table.Th>
          <Table.Th>Host</Table.Th>
          <Table.Th>Ports</Table.Th>
          <Table.Th>Health</Table.Th>
          <Table.Th>State</Table.Th>
          <Table.Th>Started</Table.Th>
          <Table.Th>Version</Table.Th>
          <Table.Th w={48} />
        </Table.Tr>
      </Table.Thead>
      <Table.Tbody>
        {tasks.map((t) => {
          const health = taskHealth(t)
          const failure = t.healthCheckResults?.find((r) => r.alive === false)?.lastFailureCause
          // Scaling bumps `version` but not the config: tasks carry the last config change's version.
          const current = app.versionInfo?.lastConfigChangeAt ?? app.version
          const outdated = current !== undefined && t.version !== undefined && t.version !== current
          return (
            <Table.Tr key={t.id}>
              <Table.Td>
                <Text className="ml-mono" lineClamp={1} maw={280} title={t.id}>
                  {t.id}
                </Text>
              </Table.Td>
              <Table.Td>
                <Text size="sm">{t.host ?? "—"}</Text>
                <Text size="xs" c="dimmed" lineClamp={1} maw={180}>
                  {t.agentId ?? t.slaveId ?? ""}
                </Text>
              </Table.Td>
              <Table.Td>
                <Group gap={4}>
                  {(t.ports ?? []).length === 0 ? (
                    <Text size="sm" c="dimmed">
                      —
                    </Text>
                  ) : (
                    (t.ports ?? []).map((p) => (
                      <Anchor key={p} href={`http://${t.host ?? "localhost"}:${p}`} target="_blank" size="sm" className="ml-mono">
                        {p}
                      </Anchor>
                    ))
                  )}
                </Group>
              </Table.Td>
              <Table.Td>
                <Tooltip label={failure ?? "No failing checks"} disabled={failure == null}>
                  <Badge color={healthColor[health]} variant="dot">
                    {health}
                  </Badge>
                </Tooltip>
              </Table.Td>
              <Table.Td>
                <Badge color={taskStateColor(t.state)} variant="light" radius="sm">
                  {taskStateLabel(t.state)}
                </Badge>
              </Table.Td>
              <Table.Td>
                <Text size="sm" style={{ whiteSpace: "nowrap" }}>
                  {ago(t.startedAt ?? t.stagedAt, now)}
                </Text>
              </Table.Td>
              <Table.Td>
                <Tooltip label={`${t.version ?? "unknown"}${outdated ? " (an older version of the app)" : ""}`}>
                  <Badge size="sm" radius="sm" variant="outline" color={outdated ? "orange" : "gray"} tt="none">
                    {outdated ? "old" : "current"}
                  </Badge>
                </Tooltip>
              </Table.Td>
              <Table.Td>
                <Menu position="bottom-end" withinPortal shadow="md">
                  <Menu.Target>
                    <ActionIcon variant="subtle" color="gray" aria-label={`Actions for ${t.id}`}>
                      <IconDots size={16} />
                    </ActionIcon>
                  </Menu.Target>
                  <Menu.Dropdown>
                    <Menu.Item leftSection={<IconSkull size={14} />} onClick={() => void kill(t, false)}>
                      Kill (and replace)
                    </Menu.Item>
                    <Menu.Item leftSection={<IconTrendingDown size={14} />} onClick={() => void kill(t, true)}>
                      Kill and scale down
                    </Menu.Item>
                  </Menu.Dropdown>
                </Menu>
              </Table.Td>
            </Table.Tr>
          )
        })}
      </Table.Tbody>
    </Table>
  )
}

/** Why instances are not placed: the queue entry's per-stage decline summary and last offers. */
export const PlacementPanel = ({ queued, now }: { queued: QueueItem | undefined; now: number }) => {
  if (queued === undefined || (queued.count ?? 0) === 0)
    return (
      <Group p="md" gap="sm">
        <ThemeIcon color="teal" variant="light" radius="xl">
          <IconCheck size={16} />
        </ThemeIcon>
        <Text size="sm">Nothing is waiting to be placed: every requested instance has been launched.</Text>
      </Group>
    )
  const summary = queued.processedOffersSummary
  const stages = summary?.rejectSummaryLastOffers ?? summary?.rejectSummaryLaunchAttempt ?? []
  const delay = queued.delay
  return (
    <Stack p="md" gap="md" data-testid="placement-panel">
      <Alert color="yellow" icon={<IconAlertTriangle size={18} />} title={`${queued.count} instance${queued.count === 1 ? "" : "s"} waiting for placement`}>
        <Text size="sm">
          In the queue since {ago(queued.since, now)}. {summary?.processedOffersCount ?? 0} offers processed, {summary?.unusedOffersCount ?? 0}{" "}
          declined; last declined {ago(summary?.lastUnusedOfferAt, now)}, last used {ago(summary?.lastUsedOfferAt, now)}.
          {delay !== undefined && delay.overdue === false && (delay.timeLeftSeconds ?? 0) > 0 && (
            <> Launches are delayed by backoff for another {Math.ceil(delay.timeLeftSeconds ?? 0)} s.</>
          )}
        </Text>
      </Alert>
      {stages.length > 0 && (
        <div>
          <Text fw={600} size="sm" mb={6}>
            Offers declined per stage
          </Text>
          <Table verticalSpacing={6} data-testid="placement-stages">
            <Table.Thead>
              <Table.Tr>
                <Table.Th>Stage</Table.Th>
                <Table.Th w={320}>Declined / processed</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {stages.map((s) => (
                <Table.Tr key={s.reason}>
                  <Table.Td>
                    <Text size="sm" ff="monospace">
                      {s.reason}
                    </Text>
                  </Table.Td>
                  <Table.Td>
                    <Group gap="sm" wrap="nowrap">
                      <Progress value={s.processed === 0 ? 0 : (s.declined / s.processed) * 100} color={s.declined > 0 ? "red" : "teal"} style={{ flex: 1 }} />
                      <Text size="sm" w={80} ta="right">
                        {s.declined} / {s.processed}
                      </Text>
                    </Group>
                  </Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </div>
      )}
      {(queued.lastUnusedOffers ?? []).length > 0 && (
        <div>
          <Text fw={600} size="sm" mb={6}>
            Last declined offers
          </Text>
          <Table verticalSpacing={6}>
            <Table.Thead>
              <Table.Tr>
                <Table.Th>Agent</Table.Th>
                <Table.Th>Reasons</Table.Th>
                <Table.Th>When</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {(queued.lastUnusedOffers ?? []).slice(0, 20).map((o, i) => (
                <Table.Tr key={`${o.offer?.id ?? i}`}>
                  <Table.Td>
                    <Text size="sm">{o.offer?.hostname ?? o.offer?.agentId ?? "—"}</Text>
                  </Table.Td>
                  <Table.Td>
                    <Group gap={4}>
                      {(o.reason ?? []).map((r, j) => (
                        <Tooltip key={r} label={o.details?.[j] ?? r} disabled={o.details?.[j] === undefined} multiline maw={360}>
                          <Badge color="red" variant="light" radius="sm" tt="none">
                            {r}
                          </Badge>
                        </Tooltip>
                      ))}
                      {(o.details ?? []).length > 0 && (
                        <Text size="xs" c="dimmed" lineClamp={1} maw={420}>
                          {(o.details ?? []).join("; ")}
                        </Text>
                      )}
                    </Group>
                  </Table.Td>
                  <Table.Td>
                    <Text size="sm">{ago(o.timestamp, now)}</Text>
                  </Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </div>
      )}
    </Stack>
  )
}

export const AppPage = ({ id, tab, onEdit }: { id: string; tab: string | undefined; onEdit: (app: App) => void }) => {
  const store = useStore()
  const { scale, restart, destroy, dialogs } = useAppDialogs(store.refresh, () => navigate("#/apps"))
  const app = store.apps.find((a) => a.id === id)
  const crumbs = (
    <Breadcrumbs>
      <Anchor href="#/apps" size="sm">
        Applications
      </Anchor>
      <Text size="sm">{id}</Text>
    </Breadcrumbs>
  )
  if (app === undefined)
    return (
      <Stack>
        {crumbs}
        {store.loaded ? (
          <Alert color="gray" title="No such application" data-testid="app-missing">
            {id} does not exist (or was just destroyed). <Anchor href="#/apps">Back to the applications</Anchor>
          </Alert>
        ) : (
          <Text c="dimmed">Loading…</Text>
        )}
      </Stack>
    )
  const queued = store.queueFor(app.id)
  const status = appStatus(app, queued)
  const deployments = store.deployments.filter((d) => (d.affectedApps ?? []).includes(app.id))
  const waiting = queued?.count ?? 0
  const activeTab = tab ?? "instances"
  const failure = app.lastTaskFailure
  return (
    <Stack gap="lg">
      {crumbs}
      <Group justify="space-between" align="flex-start">
        <Stack gap={4}>
          <Group gap="sm">
            <Title order={2} data-testid="app-title">
              {app.id}
            </Title>
            <StatusBadge status={status} />
          </Group>
          <Text className="ml-mono" c="dimmed" lineClamp={2} maw={720}>
            {app.cmd ?? app.container?.docker?.image ?? (app.args ?? []).join(" ")}
          </Text>
        </Stack>
        <Group gap="xs">
          <Button variant="default" leftSection={<IconArrowsMaximize size={16} />} onClick={() => scale(app)} data-testid="scale-app">
            Scale
          </Button>
          <Button variant="default" leftSection={<IconRefresh size={16} />} onClick={() => restart(app)} data-testid="restart-app">
            Restart
          </Button>
          <Button variant="default" leftSection={<IconEdit size={16} />} onClick={() => onEdit(app)}>
            Edit
          </Button>
          <Button color="red" variant="light" leftSection={<IconTrash size={16} />} onClick={() => destroy(app)} data-testid="destroy-app">
            Destroy
          </Button>
        </Group>
      </Group>

      <Card withBorder radius="md">
        <SimpleGrid cols={{ base: 2, md: 6 }}>
          <Field label="Instances">
            <InstancesBar app={app} width={140} />
          </Field>
          <Field label="Healthy">
            {(app.healthChecks ?? []).length === 0 ? (
              <Text c="dimmed" size="sm">
                no health checks
              </Text>
            ) : (
              app.tasksHealthy ?? 0
            )}
            {(app.tasksUnhealthy ?? 0) > 0 && (
              <Text span c="red" size="sm">
                {" "}
                · {app.tasksUnhealthy} unhealthy
              </Text>
            )}
          </Field>
          <Field label="CPUs">{app.cpus ?? 1}</Field>
          <Field label="Memory">{formatMem(app.mem ?? 128)}</Field>
          <Field label="Constraints">
            {(app.constraints ?? []).length === 0 ? (
              <Text c="dimmed" size="sm">
                none
              </Text>
            ) : (
              <Stack gap={2}>
                {(app.constraints ?? []).map((c, i) => (
                  <Code key={i}>{c.join(" ")}</Code>
                ))}
              </Stack>
            )}
          </Field>
          <Field label="Version">
            <Tooltip label={app.version ?? "—"}>
              <Text size="sm" span>
                {ago(app.versionInfo?.lastConfigChangeAt ?? app.version, store.now)}
              </Text>
            </Tooltip>
          </Field>
        </SimpleGrid>
      </Card>

      {failure != null && failure.message !== undefined && (
        <Alert color="red" variant="light" icon={<IconAlertTriangle size={18} />} title={`Last task failure ${ago(failure.timestamp, store.now)}`}>
          <Text size="sm">
            {failure.state !== undefined && <Code>{failure.state}</Code>} on {failure.host ?? "an unknown host"}: {failure.message}
          </Text>
        </Alert>
      )}

      {deployments.map((d) => (
        <Card key={d.id} withBorder radius="md" data-testid="app-deployment">
          <Group justify="space-between" mb="xs">
            <Group gap="xs">
              <ThemeIcon variant="light" radius="xl" size="sm">
                <IconRocket size={14} />
              </ThemeIcon>
              <Text fw={600} size="sm">
                Deployment in progress
              </Text>
              <Anchor href="#/deployments" size="xs" className="ml-mono">
                {d.id}
              </Anchor>
            </Group>
          </Group>
          <DeploymentProgress deployment={d} apps={store.apps} />
        </Card>
      ))}

      <Card withBorder radius="md" padding={0}>
        <Tabs value={activeTab} onChange={(t) => navigate(appHref(app.id, t ?? undefined))}>
          <Tabs.List px="md" pt="xs">
            <Tabs.Tab value="instances" leftSection={<IconListDetails size={16} />}>
              Instances ({(app.tasks ?? []).length})
            </Tabs.Tab>
            <Tabs.Tab
              value="placement"
              leftSection={<IconMapPin size={16} />}
              rightSection={
                waiting > 0 ? (
                  <Badge size="xs" color="yellow" circle>
                    {waiting}
                  </Badge>
                ) : undefined
              }
            >
              Placement
            </Tabs.Tab>
            <Tabs.Tab value="configuration" leftSection={<IconBraces size={16} />}>
              Configuration
            </Tabs.Tab>
          </Tabs.List>
          <Tabs.Panel value="instances">
            {waiting > 0 && (
              <Alert color="yellow" m="md" mb={0} icon={<IconAlertTriangle size={18} />}>
                {waiting} instance{waiting === 1 ? " is" : "s are"} not placed yet.{" "}
                <Anchor size="sm" href={appHref(app.id, "placement")}>
                  See why
                </Anchor>
              </Alert>
            )}
            <InstancesTable app={app} now={store.now} onChanged={store.refresh} />
          </Tabs.Panel>
          <Tabs.Panel value="placement">
            <PlacementPanel queued={queued} now={store.now} />
          </Tabs.Panel>
          <Tabs.Panel value="configuration">
            <Stack p="md" gap="xs">
              <Group justify="flex-end">
                <CopyButton value={JSON.stringify(definitionOf(app), null, 2)}>
                  {({ copied, copy }) => (
                    <Button size="xs" variant="default" leftSection={copied ? <IconCheck size={14} /> : <IconCopy size={14} />} onClick={copy}>
                      {copied ? "Copied" : "Copy JSON"}
                    </Button>
                  )}
                </CopyButton>
              </Group>
              <Code block data-testid="app-json" style={{ maxHeight: 520, overflow: "auto" }}>
                {JSON.stringify(definitionOf(app), null, 2)}
              </Code>
            </Stack>
          </Tabs.Panel>
        </Tabs>
      </Card>
      {dialogs}
    </Stack>
  )
}

// The definition without the embedded runtime data (tasks, counts), which has its own tabs.
const definitionOf = (app: App): Record<string, unknown> => {
  const { tasks: _tasks, tasksRunning: _r, tasksStaged: _s, tasksHealthy: _h, tasksUnhealthy: _u, lastTaskFailure: _f, ...rest } = app
  return rest
}
