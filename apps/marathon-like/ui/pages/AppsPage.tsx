// The applications list: one row per app with status, resources, instances and actions.
import { ActionIcon, Alert, Anchor, Button, Card, Group, Menu, Pagination, SegmentedControl, SimpleGrid, Stack, Table, Text, TextInput, ThemeIcon, Title } from "@mantine/core"
import {
  IconAlertCircle,
  IconApps,
  IconArrowsMaximize,
  IconDots,
  IconPlus,
  IconRefresh,
  IconRocket,
  IconSearch,
  IconServer,
  IconTrash,
  IconCpu
} from "@tabler/icons-react"
import { useEffect, useMemo, useState, type ReactNode } from "react"
import { InstancesBar, Resources, StatusBadge, useAppDialogs } from "../components.tsx"
import { appHref, navigate } from "../router.ts"
import { appStatus, type AppStatus } from "../status.ts"
import { useStore } from "../store.tsx"

const PAGE_SIZE = 50

const Stat = ({ label, value, icon, color }: { label: string; value: ReactNode; icon: ReactNode; color: string }) => (
  <Card withBorder padding="md" radius="md">
    <Group justify="space-between" wrap="nowrap">
      <div>
        <Text size="xs" c="dimmed" tt="uppercase" fw={600}>
          {label}
        </Text>
        <Text size="xl" fw={700}>
          {value}
        </Text>
      </div>
      <ThemeIcon variant="light" color={color} size={38} radius="md">
        {icon}
      </ThemeIcon>
    </Group>
  </Card>
)

export const AppsPage = ({ onCreate }: { onCreate: () => void }) => {
  const store = useStore()
  const [search, setSearch] = useState("")
  const [filter, setFilter] = useState<string>("all")
  const { scale, restart, destroy, dialogs } = useAppDialogs(store.refresh)

  const rows = useMemo(
    () =>
      store.apps
        .map((app) => ({ app, status: appStatus(app, store.queueFor(app.id)) }))
        .sort((a, b) => a.app.id.localeCompare(b.app.id)),
    [store.apps, store.queueFor]
  )
  const counts = useMemo(() => {
    const c: Record<AppStatus, number> = { Running: 0, Deploying: 0, Waiting: 0, Delayed: 0, Suspended: 0 }
    for (const r of rows) c[r.status]++
    return c
  }, [rows])
  const visible = rows.filter(
    (r) =>
      r.app.id.toLowerCase().includes(search.trim().toLowerCase()) &&
      (filter === "all" || (filter === "attention" ? r.status === "Waiting" || r.status === "Delayed" : r.status === filter))
  )
  const pages = Math.max(1, Math.ceil(visible.length / PAGE_SIZE))
  const [page, setPage] = useState(1)
  useEffect(() => setPage(1), [search, filter])
  const shown = visible.slice((Math.min(page, pages) - 1) * PAGE_SIZE, Math.min(page, pages) * PAGE_SIZE)
  const totalRunning = rows.reduce((n, r) => n + (r.app.tasksRunning ?? 0), 0)
  const totalWanted = rows.reduce((n, r) => n + (r.app.instances ?? 0), 0)
  const cpus = rows.reduce((n, r) => n + (r.app.cpus ?? 0) * (r.app.tasksRunning ?? 0), 0)

  return (
    <Stack gap="lg">
      <Group justify="space-between">
        <div>
          <Title order={2}>Applications</Title>
          <Text c="dimmed" size="sm">
            Long-running services scheduled on the cluster
          </Text>
        </div>
        <Group>
          <ActionIcon variant="default" size="lg" onClick={store.refresh} aria-label="Refresh">
            <IconRefresh size={18} />
          </ActionIcon>
          <Button leftSection={<IconPlus size={16} />} onClick={onCreate} data-testid="create-app">
            Create application
          </Button>
        </Group>
      </Group>

      <SimpleGrid cols={{ base: 2, md: 4 }}>
        <Stat label="Applications" value={rows.length} icon={<IconApps size={20} />} color="blue" />
        <Stat label="Instances running" value={`${totalRunning} / ${totalWanted}`} icon={<IconServer size={20} />} color="teal" />
        <Stat label="Deployments" value={store.deployments.length} icon={<IconRocket size={20} />} color="indigo" />
        <Stat label="CPUs in use" value={cpus.toFixed(cpus % 1 === 0 ? 0 : 1)} icon={<IconCpu size={20} />} color="grape" />
      </SimpleGrid>

      {store.error !== undefined && (
        <Alert color="red" icon={<IconAlertCircle size={18} />} title="Cannot reach the API">
          {store.error}
        </Alert>
      )}

      <Card withBorder radius="md" padding={0}>
        <Group justify="space-between" p="md" gap="sm">
          <TextInput
            placeholder="Filter by id"
            leftSection={<IconSearch size={16} />}
            value={search}
            onChange={(e) => setSearch(e.currentTarget.value)}
            style={{ flex: 1, maxWidth: 360 }}
          />
          <SegmentedControl
            size="xs"
            value={filter}
            onChange={setFilter}
            data={[
              { label: `All (${rows.length})`, value: "all" },
              { label: `Running (${counts.Running})`, value: "Running" },
              { label: `Deploying (${counts.Deploying})`, value: "Deploying" },
              { label: `Needs attention (${counts.Waiting + counts.Delayed})`, value: "attention" },
              { label: `Suspended (${counts.Suspended})`, value: "Suspended" }
            ]}
          />
        </Group>
        <Table highlightOnHover verticalSpacing="sm" horizontalSpacing="md" data-testid="apps-table">
          <Table.Thead bg="gray.0">
            <Table.Tr>
              <Table.Th>Name</Table.Th>
              <Table.Th>Status</Table.Th>
              <Table.Th>Resources</Table.Th>
              <Table.Th>Instances</Table.Th>
              <Table.Th w={60} />
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {shown.map(({ app, status }) => (
              <Table.Tr key={app.id} className="ml-row-link" data-app-id={app.id} onClick={() => navigate(appHref(app.id))}>
                <Table.Td>
                  <Anchor href={appHref(app.id)} fw={600} onClick={(e) => e.stopPropagation()}>
                    {app.id}
                  </Anchor>
                  <Text className="ml-mono" c="dimmed" lineClamp={1} maw={460}>
                    {app.cmd ?? app.container?.docker?.image ?? (app.args ?? []).join(" ")}
                  </Text>
                </Table.Td>
                <Table.Td>
                  <StatusBadge status={status} />
                </Table.Td>
                <Table.Td>
                  <Resources app={app} />
                </Table.Td>
                <Table.Td>
                  <InstancesBar app={app} />
                </Table.Td>
                <Table.Td onClick={(e) => e.stopPropagation()}>
                  <Menu position="bottom-end" withinPortal shadow="md">
                    <Menu.Target>
                      <ActionIcon variant="subtle" color="gray" aria-label={`Actions for ${app.id}`}>
                        <IconDots size={18} />
                      </ActionIcon>
                    </Menu.Target>
                    <Menu.Dropdown>
                      <Menu.Item leftSection={<IconArrowsMaximize size={14} />} onClick={() => scale(app)}>
                        Scale
                      </Menu.Item>
                      <Menu.Item leftSection={<IconRefresh size={14} />} onClick={() => restart(app)}>
                        Restart
                      </Menu.Item>
                      <Menu.Divider />
                      <Menu.Item color="red" leftSection={<IconTrash size={14} />} onClick={() => destroy(app)}>
                        Destroy
                      </Menu.Item>
                    </Menu.Dropdown>
                  </Menu>
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
        {pages > 1 && (
          <Group justify="space-between" p="md">
            <Text size="sm" c="dimmed">
              {visible.length} applications
            </Text>
            <Pagination total={pages} value={Math.min(page, pages)} onChange={setPage} size="sm" />
          </Group>
        )}
        {store.loaded && visible.length === 0 && (
          <Stack align="center" gap="xs" py={48}>
            <ThemeIcon size={48} radius="xl" variant="light" color="gray">
              <IconApps size={26} />
            </ThemeIcon>
            <Text fw={600}>{rows.length === 0 ? "No applications yet" : "No application matches"}</Text>
            <Text size="sm" c="dimmed">
              {rows.length === 0 ? "Create one from a simple form or paste a Marathon app definition." : "Change the filter to see more."}
            </Text>
            {rows.length === 0 && (
              <Button mt="sm" variant="light" leftSection={<IconPlus size={16} />} onClick={onCreate}>
                Create application
              </Button>
            )}
          </Stack>
        )}
      </Card>
      {dialogs}
    </Stack>
  )
}
